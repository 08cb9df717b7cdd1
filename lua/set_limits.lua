#!lua flags=allow-oom
-- set_limits: change a worker's live limits (the limits hash that claim reads).
-- KEYS[1] limits hash, KEYS[2] throttle keys zset
-- ARGV[1] mode, then pairs of field and value ('' = no limit):
--   'set'   the fields take the values given (PATCH /workers/{name}, pause, resume);
--   'seed'  the values come from the config file at start: a field takes its value only
--           when the file's value differs from the one it gave last time (kept as
--           config:<field>), so a live change survives restarts until the file changes.
-- Returns the limits hash after the change (HGETALL).
-- Claim scores a key that waits for a token by when the old rate gives it one; after a
-- change, the keys that wait are looked at again by the next claim (the soonest
-- RESCORE_MOST of them: each look costs a claim one step, and it puts the key back).
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local RESCORE_MOST = 10000
local limits_key, throttle_keys_key, mode = KEYS[1], KEYS[2], ARGV[1]
local changed = false
for i = 2, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local apply = true
  if mode == 'seed' then
    local seeded = redis.call('HGET', limits_key, 'config:' .. field)
    apply = seeded ~= value
    redis.call('HSET', limits_key, 'config:' .. field, value)
  end
  if apply and redis.call('HGET', limits_key, field) ~= (value ~= '' and value or false) then changed = true end
  if apply then
    if value == '' then
      redis.call('HDEL', limits_key, field)
    else
      redis.call('HSET', limits_key, field, value)
    end
  end
end
if changed or mode == 'rescore' then
  local now = server_now_ms()
  local waiting = redis.call('ZRANGEBYSCORE', throttle_keys_key, '(' .. now, '+inf', 'LIMIT', 0, RESCORE_MOST)
  for _, throttle_key in ipairs(waiting) do redis.call('ZADD', throttle_keys_key, now, throttle_key) end
end
return redis.call('HGETALL', limits_key)
