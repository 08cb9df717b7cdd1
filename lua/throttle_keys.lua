-- throttle_keys: what GET /workers/{name}/keys shows of a worker's throttle keys that have
-- jobs waiting, read at one moment. Changes nothing.
-- KEYS: throttle keys zset (key -> ms it can next be served), limits hash, then per shared
--   limit the worker names LimitKeys.claim_keys (as claim.lua is given them)
-- ARGV: queue prefix, key bucket prefix, state prefix, job prefix, how many keys to look at
--   (those that wait longest first by the zset: a key short of tokens, or whose head job is
--   due later), then per shared limit LimitKeys.claim_args
-- Returns {now_ms, keys waiting, per key looked at: key, ms it can next be served (-1: never
--   until an operator resumes it in a shared limit), jobs waiting, jobs running, tokens
--   ('' = no rate), ms it stays paused by back-pressure, then per shared limit: the tokens of
--   its bucket of the key ('' = no rate), 1 when the key is paused in it (else 0), ms that
--   bucket stays paused by back-pressure}
-- When a key can next be served is the latest of: when the zset says, when its back-pressure
-- ends (its own bucket's and each shared bucket's), when each of its buckets has the tokens
-- for its first job (the shared ones are drawn by other workers too, so the zset, which the
-- worker's own claims keep, may not know). The worker's and limits' concurrency, their
-- buckets over all keys and their pauses as a whole are GET /workers' and GET /limits'.
--!include common
--!include shared
--!include slot
local KEYS = keys_past_probes(KEYS)
local throttle_keys_key, limits_key = KEYS[1], KEYS[2]
local queue_prefix, key_bucket_prefix, state_prefix, job_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local most = tonumber(ARGV[5])
local shared = read_shared_limits(KEYS, 3, ARGV, 6, (#KEYS - 2) / SHARED_KEYS)
local now = server_now_ms()
local limits = read_limits(limits_key)

-- When a bucket at `tokens` has `cost` (capped at its burst, as claim caps it).
local function tokens_at_ms(tokens, cost, rate, burst)
  local needed = math.min(cost, burst)
  if tokens + 1e-9 >= needed then return now end
  return now + math.ceil((needed - tokens) * 1000 / rate)
end

local out = {now, redis.call('ZCARD', throttle_keys_key)}
local looked_at = redis.call('ZREVRANGE', throttle_keys_key, 0, most - 1, 'WITHSCORES')
for i = 1, #looked_at, 2 do
  local key = looked_at[i]
  local queue_key = queue_prefix .. key
  local head = redis.call('ZRANGE', queue_key, 0, 0)[1]
  local cost = 1
  if head then cost = tonumber(redis.call('HGET', job_prefix .. suffix_of_member(head), F.cost)) or 1 end
  local bucket = redis.call('HMGET', key_bucket_prefix .. key, 'tokens', 'updated_ms', 'paused_until_ms')
  local ready_ms = math.max(tonumber(looked_at[i + 1]), tonumber(bucket[3]) or 0)
  local tokens = ''
  if limits.rate then
    local level = bucket_level(bucket[1], bucket[2], limits.rate, limits.burst, now)
    tokens = string.format('%.3f', level)
    ready_ms = math.max(ready_ms, tokens_at_ms(level, cost, limits.rate, limits.burst))
  end
  local per_limit = {}
  local paused_in_a_limit = false
  for _, limit in ipairs(shared) do
    local b = redis.call('HMGET', limit.key_bucket_prefix .. key, 'tokens', 'updated_ms', 'paused_until_ms')
    local paused_until_ms = tonumber(b[3]) or 0
    local limit_tokens = ''
    if limit.rate then
      local level = bucket_level(b[1], b[2], limit.rate, limit.burst, now)
      limit_tokens = string.format('%.3f', level)
      ready_ms = math.max(ready_ms, paused_until_ms, tokens_at_ms(level, cost, limit.rate, limit.burst))
    end
    local paused = redis.call('HEXISTS', limit.paused_keys_key, key)
    if paused == 1 then paused_in_a_limit = true end
    per_limit[#per_limit + 1] = limit_tokens
    per_limit[#per_limit + 1] = paused
    per_limit[#per_limit + 1] = math.max(0, paused_until_ms - now)
  end
  if paused_in_a_limit then ready_ms = -1 end
  out[#out + 1] = key
  out[#out + 1] = ready_ms
  out[#out + 1] = redis.call('ZCARD', queue_key)
  out[#out + 1] = redis.call('ZCARD', state_prefix .. 'running:' .. key)
  out[#out + 1] = tokens
  out[#out + 1] = math.max(0, (tonumber(bucket[3]) or 0) - now)
  for _, value in ipairs(per_limit) do out[#out + 1] = value end
end
return out
