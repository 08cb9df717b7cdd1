#!lua flags=allow-oom
-- purge: delete what is no longer needed: finished jobs whose retention has passed, and
-- throttle keys' buckets that are full again; at most ARGV[2] of each per call.
-- KEYS[1] finished zset (an earlier version's: job suffix -> purge_at_ms; nothing adds to it
--   now, and it goes as it empties), KEYS[2] stats hash, KEYS[3] buckets zset (throttle key
--   -> when its bucket is full), KEYS[4] limits hash
-- ARGV[1] job key prefix, ARGV[2] most to delete, ARGV[3] key bucket prefix, ARGV[4] state
--   index prefix (WorkerKeys.state_index), ARGV[5] history prefix (its history goes with
--   it), ARGV[6..8] the retention ms of succeeded, dead and cancelled jobs
-- Returns {purged jobs, more (1 when further jobs or buckets are already due)}
-- A finished job is found by its state's listing index, scored by when it finished: one
-- finished before now - the state's retention is due. (So a retention changed in the
-- config applies to the jobs that finished before the change too.)
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
local RETAINED = {{'succeeded', tonumber(ARGV[6])}, {'dead', tonumber(ARGV[7])}, {'cancelled', tonumber(ARGV[8])}}
local now = server_now_ms()
local purged, more = 0, 0

-- Delete a job found in `index` (a state index, or the earlier version's finished zset).
local function purge_job(index, suffix)
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, F.state, F.throttle_key)
  local state = job[1]
  if state then
    redis.call('HINCRBY', stats_key, state, -1)
    redis.call('ZREM', state_prefix .. state, suffix)
    if job[2] then redis.call('ZREM', state_prefix .. state .. ':' .. job[2], suffix) end
  end
  redis.call('ZREM', index, suffix)  -- (gone from it even should its hash be gone already)
  redis.call('DEL', job_key, history_prefix .. suffix)
  redis.call('ZREM', finished_key, suffix)
  purged = purged + 1
end

-- Purge the jobs of `index` scored up to max_score, as many as this call has left.
local function purge_due(index, max_score)
  local left = most - purged
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', max_score, 'LIMIT', 0, left + 1)
  for i = 1, math.min(#due, left) do purge_job(index, due[i]) end
  if #due > left then more = 1 end
end

for _, retained in ipairs(RETAINED) do purge_due(state_prefix .. retained[1], now - retained[2]) end
purge_due(finished_key, now)  -- what an earlier version scheduled for purging (by purge_at_ms)

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
