-- cancel: stop a job that has not finished, wherever it waits or runs.
-- KEYS[1] scheduled, KEYS[2] running, KEYS[3] finished, KEYS[4] job hash
-- ARGV[1] job suffix, ARGV[2] cancelled retention ms
-- Returns {outcome, job fields (HGETALL)}: outcome is cancelled | finished | missing.
-- A receipt that arrives later for a cancelled job is answered and changes nothing.
--!include common
local scheduled_key, running_key, finished_key, job_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local suffix, retention_ms = ARGV[1], tonumber(ARGV[2])
local job = redis.call('HMGET', job_key, 'state', 'seq')
local state = job[1]
if not state then return {'missing', {}} end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
  return {'finished', redis.call('HGETALL', job_key)}
end
local now = server_now_ms()
redis.call('ZREM', scheduled_key, queue_member(job[2], suffix))
redis.call('ZREM', running_key, suffix)
redis.call('HSET', job_key, 'state', 'cancelled', 'finished_ms', now)
redis.call('ZADD', finished_key, now + retention_ms, suffix)
return {'cancelled', redis.call('HGETALL', job_key)}
