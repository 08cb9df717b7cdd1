-- Shared by the scripts that add jobs to a worker's queue (enqueue, and the cron tick);
-- needs includes/common.lua.
--
-- queue_from(first_key, first_arg) reads the queue's keys from KEYS (in the order of
-- WorkerKeys.queue_keys in keys.py) and its ARGV (WorkerKeys.queue_args); it returns the
-- queue and the indexes of the first KEYS and ARGV entries after them.
local function queue_from(first_key, first_arg)
  local queue = {scheduled = KEYS[first_key], seq = KEYS[first_key + 1]}
  return queue, first_key + 2, first_arg
end

-- The run_at_ms of the earliest job waiting in the queue; nil when none waits.
local function queue_head_ms(queue)
  local head = redis.call('ZRANGE', queue.scheduled, 0, 0, 'WITHSCORES')
  return tonumber(head[2])
end

-- Create a scheduled job. job = {args = JSON text, run_at_ms, max_attempts, timeout_ms,
-- extra = optional flat list of further hash fields and values}. Returns its sequence.
local function create_job(queue, job_key, suffix, job, now)
  local seq = redis.call('INCR', queue.seq)
  redis.call('HSET', job_key,
    'state', 'scheduled', 'args', job.args, 'run_at_ms', job.run_at_ms, 'attempts', 0,
    'max_attempts', job.max_attempts, 'timeout_ms', job.timeout_ms, 'created_ms', now, 'seq', seq)
  if job.extra and #job.extra > 0 then redis.call('HSET', job_key, unpack(job.extra)) end
  redis.call('ZADD', queue.scheduled, job.run_at_ms, queue_member(seq, suffix))
  return seq
end
