#!lua flags=allow-oom
-- pause_limit_key: pause or resume one throttle key of a shared limit (a shop that was
-- uninstalled): while it is paused, no job of that key goes, whichever worker it is of.
-- KEYS[1] the limit's paused-keys hash, then the throttle keys zset of each worker naming it
-- ARGV[1] the throttle key, ARGV[2] 'pause' | 'resume'
-- Returns 1 when that changed anything. A resume has the workers' claims look at the key
-- at once (claim looks at a paused key again only an hour later).
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local paused_keys_key, throttle_key, mode = KEYS[1], ARGV[1], ARGV[2]
if mode == 'pause' then
  return redis.call('HSET', paused_keys_key, throttle_key, '1')
end
local changed = redis.call('HDEL', paused_keys_key, throttle_key)
local now = server_now_ms()
for i = 2, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], throttle_key)
  if score and tonumber(score) > now then redis.call('ZADD', KEYS[i], now, throttle_key) end
end
return changed
