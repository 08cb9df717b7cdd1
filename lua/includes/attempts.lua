-- Shared by the scripts that end an attempt (settle, reap): a success, a failure (retried
-- after its backoff, or dead), back-pressure, or a job its coordinator returned unsent.
--!include common
--!include jobs
--!include limits

-- Back-pressure (a Retry-After) pauses the key and does not count as a failed attempt,
-- at most this many times per job; after that it counts like any other failure.
local MAX_BACK_PRESSURE_RETRIES = 100

-- The worker's retry policy, from the text the scripts are given (engine/jobs.py's
-- _policy_args): backoff initial ms, factor, max ms, jitter ('1' or '0'). (How long a
-- finished job is kept is purge's to know: it purges by the state indexes' finished_ms.)
local function retry_policy(backoff_initial_ms, backoff_factor, backoff_max_ms, jitter)
  return {
    backoff_initial_ms = tonumber(backoff_initial_ms), backoff_factor = tonumber(backoff_factor),
    backoff_max_ms = tonumber(backoff_max_ms), jitter = jitter == '1',
  }
end

-- A worker as the end of its attempts sees it: its queue, the keys an ending writes
-- besides the job's own, its policy, and the tokens given back so far in this call
-- (see refund_tokens).
local function attempts_of(queue, worker_bucket_key, buckets_key, policy)
  return {
    queue = queue, worker_bucket_key = worker_bucket_key,
    buckets_key = buckets_key, policy = policy,
    refunds = {},  -- bucket key -> {due = tokens to forfeit, forfeited = tokens forfeited so far}
  }
end

-- The wait before the next attempt after `failures` failed ones:
-- min(max, initial * factor ^ (failures - 1)), and with jitter that times
-- random_fraction (in [0, 1): full jitter).
local function backoff_ms(policy, failures, random_fraction)
  local delay = math.min(policy.backoff_max_ms, policy.backoff_initial_ms * policy.backoff_factor ^ (failures - 1))
  if policy.jitter then delay = delay * random_fraction end
  return math.floor(delay)
end

-- A job ends in `state` (succeeded, dead): job = {state (the one it leaves), attempt,
-- throttle_key}. Its state's index, scored by now, is what purge deletes it by.
local function finish(worker, job_key, suffix, job, state, now)
  redis.call('HSET', job_key, F.state, state, F.finished_ms, now)
  moved(worker.queue, suffix, job.throttle_key, job.state, state, now, job.attempt)
  count(worker.queue, state, 1)
  return state
end

-- A running job waits to run again at run_at: job = {attempt, seq, throttle_key}.
local function retry_at(worker, job_key, suffix, job, run_at)
  local throttle_key = job.throttle_key or ''
  redis.call('HSET', job_key, F.state, 'retrying', F.run_at_ms, run_at)
  push_job(worker.queue, throttle_key, job.seq, suffix, run_at)
  moved(worker.queue, suffix, throttle_key, 'running', 'retrying', run_at, job.attempt)
  count(worker.queue, 'queued', 1)
  count(worker.queue, 'retrying', 1)
  return 'retrying'
end

-- The attempts' history a job keeps: a list beside its hash (WorkerKeys.history), oldest
-- first, one JSON text per attempt, its keys the short names of H (fields.lua). (In the
-- hash, a value that long would turn the hash from Redis's compact encoding into a table of
-- several times its size.)
local HISTORY_KEPT = 25

-- Add the end of an attempt to the job's history: job = {attempt, started_ms, sent_by};
-- outcome is failed | timed out | throttled | unsent; status is the HTTP status (0 =
-- none). A success is not added: the hash says it (started_ms, finished_ms, status,
-- sent_by), so a job that succeeds at its first attempt keeps no history list.
local function record_attempt(queue, suffix, job, outcome, status, error_text, now)
  local entry = {[H.attempt] = tonumber(job.attempt), [H.started_ms] = tonumber(job.started_ms),
    [H.ended_ms] = now, [H.outcome] = outcome, [H.sent_by] = job.sent_by or ''}
  if status and status > 0 then entry[H.status] = status end
  if error_text and error_text ~= '' then entry[H.error] = error_text end
  local history_key = queue.history_prefix .. suffix
  if redis.call('RPUSH', history_key, cjson.encode(entry)) > HISTORY_KEPT then
    redis.call('LTRIM', history_key, -HISTORY_KEPT, -1)
  end
end

-- Pause a throttle key (or, for the key '', the whole worker) until until_ms.
local function pause_until(worker, throttle_key, until_ms)
  local queue = worker.queue
  local bucket_key = worker.worker_bucket_key
  if throttle_key ~= '' then bucket_key = queue.key_bucket_prefix .. throttle_key end
  local previous = tonumber(redis.call('HGET', bucket_key, 'paused_until_ms'))
  if previous == nil or previous < until_ms then
    redis.call('HSET', bucket_key, 'paused_until_ms', until_ms)
    if throttle_key ~= '' then  -- kept until the pause ends at least (purge looks then)
      redis.call('PERSIST', bucket_key)  -- a TTL an earlier release set must not end it early
      local purge_at = tonumber(redis.call('ZSCORE', worker.buckets_key, throttle_key))
      if purge_at == nil or purge_at < until_ms then redis.call('ZADD', worker.buckets_key, until_ms, throttle_key) end
    end
  end
  local ready_ms = tonumber(redis.call('ZSCORE', queue.throttle_keys, throttle_key))
  if ready_ms ~= nil and ready_ms < until_ms then redis.call('ZADD', queue.throttle_keys, until_ms, throttle_key) end
end

-- A failed attempt. With retry_after_ms >= 0 (429/503 with Retry-After, or a receipt's
-- retryAfter) it is back-pressure: the key pauses, the job runs again then, and the
-- attempt is not counted. Otherwise it is retried after its backoff, or dead when it
-- was permanent or the last one allowed.
-- job = {state ('running'), attempt, max_attempts, seq, throttled (back-pressure retries so
-- far), unsent (attempts returned unsent so far), throttle_key}
-- The attempt goes into the job's history (record_attempt: job carries started_ms and
-- sent_by too) as `failure` ('failed', 'timed out'), or 'throttled' when it is
-- back-pressure; status is the HTTP status (0 = none). An answer that pushed back (a 429, or
-- back-pressure) is counted in the stats hash's `throttled` (GET /workers' throttled).
local function fail_attempt(worker, job_key, suffix, job, error_text, permanent, retry_after_ms, now, failure, status)
  redis.call('HSET', job_key, F.last_error, error_text)
  local throttle_key = job.throttle_key or ''
  local throttled = tonumber(job.throttled) or 0
  if status == 429 or (not permanent and retry_after_ms >= 0) then
    redis.call('HINCRBY', worker.queue.stats, 'throttled', 1)
  end
  if not permanent and retry_after_ms >= 0 and throttled < MAX_BACK_PRESSURE_RETRIES then
    record_attempt(worker.queue, suffix, job, 'throttled', status, error_text, now)
    redis.call('HSET', job_key, F.throttled, throttled + 1)
    local run_at = now + retry_after_ms
    pause_until(worker, throttle_key, run_at)
    return retry_at(worker, job_key, suffix, job, run_at)
  end
  record_attempt(worker.queue, suffix, job, failure, status, error_text, now)
  local failures = tonumber(job.attempt) - throttled - (tonumber(job.unsent) or 0)
  if permanent or failures >= tonumber(job.max_attempts) then
    return finish(worker, job_key, suffix, job, 'dead', now)
  end
  local delay_ms = backoff_ms(worker.policy, failures, math.random())
  return retry_at(worker, job_key, suffix, job, now + delay_ms)
end

-- Tokens given back by return_unsent, per bucket, in this script call. While a claimed job
-- is out, its bucket refills as if the token were spent; had it not been claimed, a full
-- bucket would have lost that refill to its cap. When the job's claim is still the last
-- write to the bucket, the cap applied at the refund (min with the burst) accounts for
-- that exactly. When something drew on it (or gave back to it) since, the refund forfeits,
-- once per bucket and call, the refill of the longest time such a job was out (rate x that
-- time): never more tokens than the job's absence left room for.
local function refund_tokens(worker, bucket_key, rate, burst, cost, claimed_ms, now)
  local bucket = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
  local r = worker.refunds[bucket_key]
  if r == nil then
    r = {due = 0, forfeited = 0, last_write_ms = tonumber(bucket[2])}
    worker.refunds[bucket_key] = r
  end
  cost = math.min(cost, burst)
  local give = cost
  if claimed_ms ~= r.last_write_ms then
    r.due = math.max(r.due, math.max(0, now - claimed_ms) * rate / 1000)
    give = math.max(0, cost - (r.due - r.forfeited))
    r.forfeited = r.forfeited + (cost - give)
  end
  if not bucket[1] or give <= 0 then return end  -- a missing bucket is full: nothing to give back
  local tokens = math.min(burst, bucket_level(bucket[1], bucket[2], rate, burst, now) + give)
  redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
end

-- A claimed job that its coordinator did not send, because it could not within
-- send_window of the claim: it goes back to its queue at its run time, as if it had not
-- been claimed, and the tokens its claim took are given back (less the forfeit above).
-- Its attempt number stays taken (receipts stay bound to attempts) but is not counted as
-- a failure.
-- job = {attempt, seq, unsent (so far), throttle_key, run_at_ms, cost, claimed_ms}
local function return_unsent(worker, job_key, suffix, job, now)
  local queue = worker.queue
  local throttle_key = job.throttle_key or ''
  local state = 'scheduled'
  if tonumber(job.attempt) - (tonumber(job.unsent) or 0) > 1 then state = 'retrying' end
  redis.call('HSET', job_key, F.state, state, F.unsent, (tonumber(job.unsent) or 0) + 1)
  local run_at = math.min(tonumber(job.run_at_ms) or now, now)
  push_job(queue, throttle_key, job.seq, suffix, run_at)
  moved(queue, suffix, throttle_key, 'running', state, run_at, job.attempt)
  count(queue, 'queued', 1)
  if state == 'retrying' then count(queue, 'retrying', 1) end
  local limits = read_limits(queue.limits)
  local cost = tonumber(job.cost) or 1
  local claimed_ms = tonumber(job.claimed_ms) or now
  if limits.rate then
    refund_tokens(worker, queue.key_bucket_prefix .. throttle_key, limits.rate, limits.burst, cost, claimed_ms, now)
  end
  if limits.total_rate then
    refund_tokens(worker, worker.worker_bucket_key, limits.total_rate, limits.total_burst, cost, claimed_ms, now)
  end
  return 'returned'
end
