-- throttle_keys: what GET /workers/{name}/keys shows of a worker's throttle keys that have
-- jobs waiting, read at one moment. Changes nothing.
-- KEYS: throttle keys zset (key -> ms it can next be served), limits hash
-- ARGV: queue prefix, key bucket prefix, state prefix, how many keys to look at (those that
--   wait longest first by the zset: a key short of tokens, or whose head job is due later)
-- Returns {now_ms, keys waiting, per key looked at: key, ms it can next be served (by the
--   zset, or when its back-pressure ends, whichever is later), jobs
--   waiting, jobs running, tokens ('' = no rate), ms it stays paused by back-pressure}
--!include common
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local throttle_keys_key, limits_key = KEYS[1], KEYS[2]
local queue_prefix, key_bucket_prefix, state_prefix, most = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = server_now_ms()
local limits = read_limits(limits_key)

local out = {now, redis.call('ZCARD', throttle_keys_key)}
local looked_at = redis.call('ZREVRANGE', throttle_keys_key, 0, most - 1, 'WITHSCORES')
for i = 1, #looked_at, 2 do
  local key = looked_at[i]
  local bucket = redis.call('HMGET', key_bucket_prefix .. key, 'tokens', 'updated_ms', 'paused_until_ms')
  local tokens = ''
  if limits.rate then
    tokens = string.format('%.3f', bucket_level(bucket[1], bucket[2], limits.rate, limits.burst, now))
  end
  local paused_until_ms = tonumber(bucket[3]) or 0
  local paused_ms = math.max(0, paused_until_ms - now)
  out[#out + 1] = key
  out[#out + 1] = math.max(tonumber(looked_at[i + 1]), paused_until_ms)
  out[#out + 1] = redis.call('ZCARD', queue_prefix .. key)
  out[#out + 1] = redis.call('ZCARD', state_prefix .. 'running:' .. key)
  out[#out + 1] = tokens
  out[#out + 1] = paused_ms
end
return out
