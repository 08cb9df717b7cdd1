#!lua flags=allow-oom
-- cancel: stop a job that has not finished, wherever it waits or runs.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then running, job hash
-- ARGV: the queue's args (WorkerKeys.queue_args), then job suffix
-- Returns {outcome, job fields (HGETALL)}: outcome is cancelled | finished | missing.
-- A receipt that arrives later for a cancelled job is answered and changes nothing.
--!include common
--!include jobs
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local running_key, job_key = KEYS[6], KEYS[7]
local suffix = ARGV[5]
local job = redis.call('HMGET', job_key, F.state, F.seq, F.throttle_key, F.attempts)
local state = job[1]
if not state then return {'missing', {}} end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
  return {'finished', redis.call('HGETALL', job_key)}
end
local now = server_now_ms()
if state == 'scheduled' or state == 'retrying' then
  -- Its key keeps its place in throttle_keys; claim drops a key whose queue is empty.
  redis.call('ZREM', queue.queue_prefix .. (job[3] or ''), queue_member(job[2], suffix))
  count(queue, 'queued', -1)
  if state == 'retrying' then count(queue, 'retrying', -1) end
else
  redis.call('ZREM', running_key, suffix)
end
redis.call('HSET', job_key, F.state, 'cancelled', F.finished_ms, now)
moved(queue, suffix, job[3], state, 'cancelled', now, tonumber(job[4]) or 0)
count(queue, 'cancelled', 1)
write_counts(queue)
return {'cancelled', redis.call('HGETALL', job_key)}
