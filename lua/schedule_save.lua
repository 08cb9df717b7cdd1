-- schedule_save: create a cron schedule, or update it in place when its id exists.
-- KEYS[1] schedules zset (suffix -> next_fire_ms), KEYS[2] schedule-ids set, KEYS[3] the schedule hash
-- ARGV[1] suffix, ARGV[2] cron, ARGV[3] timezone, ARGV[4] args (JSON text),
--   ARGV[5] max_attempts ('' = the worker's default at tick time), ARGV[6] timeout_ms (''),
--   ARGV[7] catch_up (1 or 0), ARGV[8] next_fire_ms for this cron and timezone, from now,
--   ARGV[9] throttle_key (''), ARGV[10] cost ('')
-- Returns {created (1|0), next_fire_ms, revision, paused (1|0)}.
-- An update that keeps the cron and the timezone keeps the stored next fire time, so a
-- deploy that registers its schedules again neither skips nor repeats a tick; a changed
-- cron or timezone starts from the next fire time of the new one. A paused schedule stays
-- paused. Every save bumps the revision, so a tick computed from the old spec is refused.
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local schedules_key, ids_key, schedule_key = KEYS[1], KEYS[2], KEYS[3]
local suffix, cron, timezone = ARGV[1], ARGV[2], ARGV[3]
local now = server_now_ms()

local old = redis.call('HMGET', schedule_key, 'cron', 'timezone', 'next_fire_ms', 'paused')
local created = old[1] == false
local next_fire_ms = tonumber(ARGV[8])
if not created and old[1] == cron and old[2] == timezone and tonumber(old[3]) ~= nil then
  next_fire_ms = tonumber(old[3])
end
local paused = (not created) and old[4] == '1'

redis.call('HSET', schedule_key,
  'cron', cron, 'timezone', timezone, 'args', ARGV[4], 'max_attempts', ARGV[5], 'timeout_ms', ARGV[6],
  'catch_up', ARGV[7], 'throttle_key', ARGV[9], 'cost', ARGV[10],
  'next_fire_ms', next_fire_ms, 'paused', paused and '1' or '0', 'updated_ms', now)
if created then redis.call('HSET', schedule_key, 'created_ms', now) end
local revision = redis.call('HINCRBY', schedule_key, 'revision', 1)
redis.call('SADD', ids_key, suffix)
if not paused then redis.call('ZADD', schedules_key, next_fire_ms, suffix) end
return {created and 1 or 0, next_fire_ms, revision, paused and 1 or 0}
