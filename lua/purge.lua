#!lua flags=allow-oom
-- purge: delete what is no longer needed: finished jobs whose retention has passed, and
-- throttle keys' buckets that are full again; at most ARGV[2] of each per call.
-- KEYS[1] finished zset, KEYS[2] stats hash, KEYS[3] buckets zset (throttle key -> when its
--   bucket is full), KEYS[4] limits hash
-- ARGV[1] job key prefix, ARGV[2] most to delete, ARGV[3] key bucket prefix, ARGV[4] state
--   index prefix (a purged job leaves its state's listing indexes: WorkerKeys.state_index),
--   ARGV[5] history prefix (its history goes with it)
-- Returns {purged jobs, more (1 when further jobs or buckets are already due)}
-- A bucket is looked at under the limits of now: if a lower rate (or a larger burst) since
-- it was written means it is not full yet, or a back-pressure pause holds, it stays until
-- then, so a bucket never reads as full (missing) before it is.
--!include common
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local finished_key, stats_key, buckets_key, limits_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix, most, key_bucket_prefix, state_prefix, history_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3],
  ARGV[4], ARGV[5]
local now = server_now_ms()
local due = redis.call('ZRANGEBYSCORE', finished_key, '-inf', now, 'LIMIT', 0, most + 1)
local purged = 0
for i = 1, math.min(#due, most) do
  local job_key = job_prefix .. due[i]
  local job = redis.call('HMGET', job_key, F.state, F.throttle_key)
  local state = job[1]
  if state then
    redis.call('HINCRBY', stats_key, state, -1)
    redis.call('ZREM', state_prefix .. state, due[i])
    if job[2] then redis.call('ZREM', state_prefix .. state .. ':' .. job[2], due[i]) end
  end
  redis.call('DEL', job_key, history_prefix .. due[i])
  redis.call('ZREM', finished_key, due[i])
  purged = purged + 1
end
local more = 0
if #due > most then more = 1 end

local full = redis.call('ZRANGEBYSCORE', buckets_key, '-inf', now, 'LIMIT', 0, most + 1)
if #full > 0 then
  local limits = read_limits(limits_key)
  local rate, burst = limits.rate, limits.burst
  for i = 1, math.min(#full, most) do
    local throttle_key = full[i]
    local bucket_key = key_bucket_prefix .. throttle_key
    local b = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms', 'paused_until_ms')
    local keep_until = tonumber(b[3]) or 0
    if rate and b[1] then
      local level = bucket_level(b[1], b[2], rate, burst, now)
      if level + 1e-9 < burst then keep_until = math.max(keep_until, now + math.ceil((burst - level) * 1000 / rate)) end
    end
    if keep_until > now then
      redis.call('ZADD', buckets_key, keep_until, throttle_key)
    else
      redis.call('DEL', bucket_key)
      redis.call('ZREM', buckets_key, throttle_key)
    end
  end
  if #full > most then more = 1 end
end
return {purged, more}
