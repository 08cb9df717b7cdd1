#!lua flags=allow-oom
-- settle: end running attempts with the receipts that answer them.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), running zset, worker bucket hash, buckets
--   zset (throttle key -> when its bucket is full), then one job hash per receipt
-- ARGV: the queue's args (WorkerKeys.queue_args), job key prefix, backoff initial ms, backoff
--   factor, backoff max ms, jitter (1 or 0), random seed, then 9 per receipt: suffix, attempt, outcome ('success' | 'failure' |
--   'permanent' | 'unsent': the coordinator did not send it, see return_unsent),
--   error, result (JSON text or ''), retry_after_ms (-1 = none), digest (identifies the
--   receipt, to recognise a repeat), seq (the enqueue sequence of the job the receipt
--   answers; 0 = not checked), status (the worker's HTTP status; 0 = none)
-- Returns one word per receipt: succeeded | retrying | dead | returned (accepted), duplicate (an exact
-- repeat of the accepted receipt), stale (answers an attempt that is no longer running; but a
-- success for a job that died when its last attempt's lease ran out is accepted: succeeded),
-- cancelled (the job was cancelled; nothing changes), missing (no such job).
--!include common
--!include jobs
--!include attempts
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local running_key, worker_bucket_key, buckets_key = KEYS[6], KEYS[7], KEYS[8]
local FIRST_JOB_KEY, ARGS_BEFORE_RECEIPTS, ARGS_PER_RECEIPT = 9, 10, 9
local policy = retry_policy(ARGV[6], ARGV[7], ARGV[8], ARGV[9])
math.randomseed(tonumber(ARGV[10]))  -- the caller's seed keeps the script deterministic for replication
local worker = attempts_of(queue, worker_bucket_key, buckets_key, policy)

local now = server_now_ms()
local out = {}
for i = FIRST_JOB_KEY, #KEYS do
  local job_key = KEYS[i]
  local a = ARGS_BEFORE_RECEIPTS + (i - FIRST_JOB_KEY) * ARGS_PER_RECEIPT
  local suffix, attempt, outcome = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local error_text, result, retry_after_ms, digest = ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 6]), ARGV[a + 7]
  local receipt_seq, status = tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9])
  local job = redis.call('HMGET', job_key, F.state, F.attempts, F.max_attempts, F.seq, F.settled_attempt,
    F.receipt_digest, F.throttled, F.throttle_key, F.unsent, F.run_at_ms, F.cost, F.lease_deadline_ms,
    F.lease_timeout_ms, F.started_ms, F.sent_by)
  local state = job[1]
  if not state then
    out[#out + 1] = 'missing'
  elseif receipt_seq ~= 0 and receipt_seq ~= tonumber(job[4]) then
    out[#out + 1] = 'stale'  -- it answers an earlier job that had the same id (purged since)
  elseif state == 'cancelled' then
    out[#out + 1] = 'cancelled'
  elseif state == 'dead' and outcome == 'success' and tonumber(job[2]) == attempt and tonumber(job[5]) == attempt
      and job[6] == 'timed out' then
    -- A success for the last attempt, which was reaped when its lease ran out (Redis, or
    -- this coordinator, was too slow to settle it in time): the work was done, so the job
    -- succeeded rather than died. (A job reaped with attempts left runs again instead.)
    count(queue, 'dead', -1)
    redis.call('HSET', job_key, F.receipt_digest, digest)
    if result ~= '' then redis.call('HSET', job_key, F.result, result) end
    if status > 0 then redis.call('HSET', job_key, F.status, status) end
    out[#out + 1] = finish(worker, job_key, suffix, {state = 'dead', attempt = attempt, throttle_key = job[8]},
      'succeeded', now)
  elseif state ~= 'running' or tonumber(job[2]) ~= attempt then
    if tonumber(job[5]) == attempt and job[6] == digest then
      out[#out + 1] = 'duplicate'
    else
      out[#out + 1] = 'stale'
    end
  else
    redis.call('ZREM', running_key, suffix)
    redis.call('HSET', job_key, F.settled_attempt, attempt, F.receipt_digest, digest)
    local ended = {
      state = 'running', attempt = attempt, max_attempts = job[3], seq = job[4], throttled = job[7],
      throttle_key = job[8], unsent = job[9], run_at_ms = job[10], cost = job[11],
      claimed_ms = (tonumber(job[12]) or now) - (tonumber(job[13]) or 0),
      started_ms = job[14], sent_by = job[15],
    }
    if outcome == 'success' then
      if result ~= '' then redis.call('HSET', job_key, F.result, result) end
      -- The history's last entry is read from the hash (started_ms, finished_ms, status,
      -- sent_by): most jobs succeed at once and then need no history list at all.
      if status > 0 then redis.call('HSET', job_key, F.status, status) end
      out[#out + 1] = finish(worker, job_key, suffix, ended, 'succeeded', now)
    elseif outcome == 'unsent' then
      record_attempt(queue, suffix, ended, 'unsent', status, error_text, now)
      out[#out + 1] = return_unsent(worker, job_key, suffix, ended, now)
    else
      out[#out + 1] = fail_attempt(worker, job_key, suffix, ended, error_text, outcome == 'permanent',
        retry_after_ms, now, 'failed', status)
    end
  end
end
write_counts(queue)
return out
