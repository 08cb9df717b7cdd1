#!lua flags=allow-oom
-- schedule_pause: pause a schedule (no ticks until resumed) or resume it.
-- KEYS[1] schedules zset, KEYS[2] the schedule hash
-- ARGV[1] suffix, ARGV[2] 'pause' | 'resume', ARGV[3] next_fire_ms from now (used by resume)
-- Returns {'missing'}, or {'ok', paused (1|0), next_fire_ms, revision}. Ticks missed while
-- paused are not fired: a resumed schedule goes on from its next fire time after now.
-- Pausing a paused schedule or resuming a running one changes nothing.
--!include slot
local KEYS = keys_past_probes(KEYS)
local schedules_key, schedule_key = KEYS[1], KEYS[2]
local suffix, action = ARGV[1], ARGV[2]

local state = redis.call('HMGET', schedule_key, 'paused', 'next_fire_ms', 'revision')
if state[1] == false then return {'missing'} end
local paused, next_fire_ms, revision = state[1] == '1', tonumber(state[2]), tonumber(state[3])

if action == 'pause' and not paused then
  redis.call('HSET', schedule_key, 'paused', '1')
  redis.call('ZREM', schedules_key, suffix)
  revision = redis.call('HINCRBY', schedule_key, 'revision', 1)
  paused = true
elseif action == 'resume' and paused then
  next_fire_ms = tonumber(ARGV[3])
  redis.call('HSET', schedule_key, 'paused', '0', 'next_fire_ms', next_fire_ms)
  redis.call('ZADD', schedules_key, next_fire_ms, suffix)
  revision = redis.call('HINCRBY', schedule_key, 'revision', 1)
  paused = false
end
return {'ok', paused and 1 or 0, next_fire_ms, revision}
