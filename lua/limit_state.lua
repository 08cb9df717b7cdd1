-- limit_state: what GET /limits/{name} shows of one shared limit, read at one moment.
-- Changes nothing.
-- KEYS: the limit's limits hash, bucket over all keys, running zset, paused-keys hash, and
--   the bucket of the throttle key asked about
-- ARGV: most paused keys to list
-- Returns {now_ms, limits (HGETALL), tokens of the key's bucket ('' = no rate), tokens of the
--   bucket over all keys ('' = no total_rate), attempts in flight, paused keys (at most ARGV[1])}
--!include common
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local limits_key, bucket_key, running_key, paused_keys_key, key_bucket_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local most = tonumber(ARGV[1])
local now = server_now_ms()
local limits = read_limits(limits_key)
local key_tokens, total_tokens = '', ''
if limits.rate then
  local b = redis.call('HMGET', key_bucket_key, 'tokens', 'updated_ms')
  key_tokens = string.format('%.3f', bucket_level(b[1], b[2], limits.rate, limits.burst, now))
end
if limits.total_rate then
  local b = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
  total_tokens = string.format('%.3f', bucket_level(b[1], b[2], limits.total_rate, limits.total_burst, now))
end
local paused = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', paused_keys_key, cursor, 'COUNT', 100)
  cursor = page[1]
  for i = 1, #page[2], 2 do
    if #paused < most then paused[#paused + 1] = page[2][i] end
  end
until cursor == '0' or #paused >= most
return {now, redis.call('HGETALL', limits_key), key_tokens, total_tokens, redis.call('ZCARD', running_key), paused}
