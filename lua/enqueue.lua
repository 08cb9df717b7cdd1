-- enqueue: add jobs to a worker's queue. A job whose id already exists is left as it is.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then one job hash per job
-- ARGV: the queue's args (WorkerKeys.queue_args), then 8 per job: suffix, args (JSON text),
--   run_at_ms ('' = now + delay_ms), delay_ms, max_attempts, timeout_ms ('' = the worker's),
--   throttle_key ('' = none), cost
-- Returns {now_ms, wake, one entry per job}: the entry is the new job's run_at_ms, or
-- the existing job's fields (HGETALL). wake is 1 when a new job is due before the
-- previous head of the queue, so sleeping dispatchers should look again.
-- A job whose cost is above the worker's burst could never run: then nothing is created
-- and the answer is {'cost', index of the job (1-based), 'burst' or 'total_burst', its size}.
--!include common
--!include jobs
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local FIRST_JOB_KEY, ARGS_BEFORE_JOBS, ARGS_PER_JOB = 6, 4, 8

local limits = read_limits(queue.limits)
for i = FIRST_JOB_KEY, #KEYS do
  local a = ARGS_BEFORE_JOBS + (i - FIRST_JOB_KEY) * ARGS_PER_JOB
  local bucket, size = cost_refusal(limits, tonumber(ARGV[a + 8]))
  -- (an existing id is answered with its job, whatever the cost)
  if bucket and redis.call('EXISTS', KEYS[i]) == 0 then
    return {'cost', i - FIRST_JOB_KEY + 1, bucket, string.format('%.17g', size)}
  end
end

local now = server_now_ms()
local head_ms = queue_head_ms(queue)
local earliest_new_ms = nil
local out = {now, 0}

for i = FIRST_JOB_KEY, #KEYS do
  local job_key = KEYS[i]
  local a = ARGS_BEFORE_JOBS + (i - FIRST_JOB_KEY) * ARGS_PER_JOB
  local existing = redis.call('HGETALL', job_key)
  if #existing > 0 then
    out[#out + 1] = existing
  else
    local run_at = tonumber(ARGV[a + 3])
    if run_at == nil then run_at = now + tonumber(ARGV[a + 4]) end
    create_job(queue, job_key, ARGV[a + 1], {
      args = ARGV[a + 2], run_at_ms = run_at, max_attempts = ARGV[a + 5], timeout_ms = ARGV[a + 6],
      throttle_key = ARGV[a + 7], cost = ARGV[a + 8],
    }, now)
    out[#out + 1] = run_at
    if earliest_new_ms == nil or run_at < earliest_new_ms then earliest_new_ms = run_at end
  end
end

if earliest_new_ms ~= nil and (head_ms == nil or earliest_new_ms < head_ms) then out[2] = 1 end
write_counts(queue)
return out
