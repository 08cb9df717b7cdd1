-- schedules_due: read the schedules whose next fire time has come, or comes within
-- horizon_ms (changes nothing).
-- KEYS[1] schedules zset; ARGV[1] schedule key prefix, ARGV[2] most to return, ARGV[3] horizon_ms
-- Returns {now_ms, earliest_next_fire_ms (-1 = no schedule), due_ms, then 6 per schedule
--   due by due_ms: suffix, next_fire_ms, revision, cron, timezone, catch_up}.
-- due_ms is now, or the earliest next fire time when that lies within the horizon: the
-- coordinator computes the ticks ahead and hands them to tick.lua to fire at due_ms.
-- The coordinator computes each one's ticks and next fire time from these and hands them to
-- tick.lua, which refuses them if the schedule changed meanwhile.
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local schedules_key, schedule_prefix, most, horizon_ms = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now_ms()

local head = redis.call('ZRANGE', schedules_key, 0, 0, 'WITHSCORES')
local earliest = head[2] and tonumber(head[2]) or -1
local due_ms = now
if earliest > now and earliest <= now + horizon_ms then due_ms = earliest end
local out = {now, earliest, due_ms}
local due = redis.call('ZRANGEBYSCORE', schedules_key, '-inf', due_ms, 'WITHSCORES', 'LIMIT', 0, most)
for i = 1, #due, 2 do
  local suffix = due[i]
  local spec = redis.call('HMGET', schedule_prefix .. suffix, 'revision', 'cron', 'timezone', 'catch_up')
  if spec[1] then
    out[#out + 1] = suffix
    out[#out + 1] = tonumber(due[i + 1])
    out[#out + 1] = tonumber(spec[1])
    out[#out + 1] = spec[2]
    out[#out + 1] = spec[3]
    out[#out + 1] = spec[4]
  end
end
return out
