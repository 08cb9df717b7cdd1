#!lua flags=allow-oom
-- retry: run finished jobs again (an operator's retry of dead or cancelled jobs): each
-- goes back to its throttle key's queue as scheduled, due at run_at, with its attempts
-- starting over. Its history stays; its last error and result are cleared. It gets a new
-- enqueue sequence, so a late receipt of an attempt from before cannot settle a new one.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), finished zset (an earlier version's: a job leaves
--   it, so that its purge_at_ms cannot purge it), operation hash (written
--   only when the call reports to an operation: an operation id is given)
-- ARGV: the queue's args (WorkerKeys.queue_args), job key prefix, the states a job may be
--   in to be retried (comma-separated: 'dead,cancelled'), run_at_ms ('' = now), delay_ms,
--   args (JSON text, '' = keep), operation id ('' = none), mode: 'ids' (then the job
--   suffixes) or 'index' (then most: take the first jobs of the first state's index)
-- Returns {now_ms, wake (1 when a retried job is due before the queue's previous head),
--   then 2 per job looked at: suffix, outcome (retried | missing | the state it is in)}
--!include common
--!include jobs
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local finished_key, operation_key = KEYS[6], KEYS[7]
local job_prefix, states_text = ARGV[5], ARGV[6]
local run_at_arg, delay_ms, new_args, operation, mode = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10], ARGV[11]

-- the ARGV after the fixed ones (12 on) are the job suffixes, or how many to take
local allowed, suffixes = bulk_targets(queue, states_text, mode, ARGV, 12, #ARGV)

local now = server_now_ms()
local run_at = run_at_arg or (now + (delay_ms or 0))
local head_ms = queue_head_ms(queue)
local out = {now, 0}
local retried = 0
for _, suffix in ipairs(suffixes) do
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, F.state, F.throttle_key, F.attempts)
  local state = job[1]
  if not state then
    out[#out + 1] = suffix
    out[#out + 1] = 'missing'
  elseif not allowed[state] then
    out[#out + 1] = suffix
    out[#out + 1] = state
  else
    local throttle_key = job[2] or ''
    local seq = redis.call('INCR', queue.seq)
    redis.call('ZREM', finished_key, suffix)
    redis.call('HDEL', job_key, F.finished_ms, F.settled_attempt, F.receipt_digest, F.throttled, F.unsent,
      F.lease_deadline_ms, F.lease_timeout_ms, F.started_ms, F.sent_by, F.last_error, F.result, F.status)
    redis.call('HSET', job_key, F.state, 'scheduled', F.attempts, 0, F.run_at_ms, run_at, F.seq, seq)
    if new_args ~= '' then redis.call('HSET', job_key, F.args, new_args) end
    push_job(queue, throttle_key, seq, suffix, run_at)
    moved(queue, suffix, throttle_key, state, 'scheduled', run_at, 0)
    count(queue, state, -1)
    count(queue, 'queued', 1)
    retried = retried + 1
    out[#out + 1] = suffix
    out[#out + 1] = 'retried'
  end
end
if retried > 0 and (head_ms == nil or run_at < head_ms) then out[2] = 1 end
if operation ~= '' then redis.call('HINCRBY', operation_key, 'done', retried) end
write_counts(queue)
return out
