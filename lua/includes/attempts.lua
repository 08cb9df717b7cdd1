-- Shared by the scripts that end an attempt (settle, reap); needs includes/common.lua and
-- includes/jobs.lua. They pass the same layout:
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then running, finished, worker bucket,
--   buckets zset (throttle key -> when its bucket is full; purge deletes it then)
-- ARGV: the queue's args (WorkerKeys.queue_args), then job key prefix, backoff initial ms,
--   backoff factor, backoff max ms, jitter (1 or 0), random seed, succeeded retention ms,
--   dead retention ms; their own arguments follow from ARGV[LAST_POLICY_ARG + 1].
local queue, next_key, next_arg = queue_from(1, 1)
local running_key, finished_key, worker_bucket_key, buckets_key =
  KEYS[next_key], KEYS[next_key + 1], KEYS[next_key + 2], KEYS[next_key + 3]
local FIRST_JOB_KEY = next_key + 4
local job_prefix = ARGV[next_arg]
local backoff_initial_ms, backoff_factor, backoff_max_ms = tonumber(ARGV[next_arg + 1]), tonumber(ARGV[next_arg + 2]), tonumber(ARGV[next_arg + 3])
local jitter = ARGV[next_arg + 4] == '1'
local succeeded_retention_ms, dead_retention_ms = tonumber(ARGV[next_arg + 6]), tonumber(ARGV[next_arg + 7])
local LAST_POLICY_ARG = next_arg + 7
-- The seed comes from the caller so that the script stays deterministic for replication.
math.randomseed(tonumber(ARGV[next_arg + 5]))

-- Back-pressure (a Retry-After) pauses the key and does not count as a failed attempt,
-- at most this many times per job; after that it counts like any other failure.
local MAX_BACK_PRESSURE_RETRIES = 100

local function backoff_ms(failures)
  local delay = math.min(backoff_max_ms, backoff_initial_ms * backoff_factor ^ (failures - 1))
  if jitter then delay = delay * math.random() end  -- full jitter
  return math.floor(delay)
end

local function finish(job_key, suffix, state, now, retention_ms)
  redis.call('HSET', job_key, 'state', state, 'finished_ms', now)
  redis.call('ZADD', finished_key, now + retention_ms, suffix)
  count(queue, state, 1)
  return state
end

local function retry_at(job_key, suffix, seq, throttle_key, run_at)
  redis.call('HSET', job_key, 'state', 'retrying', 'run_at_ms', run_at)
  push_job(queue, throttle_key, seq, suffix, run_at)
  count(queue, 'queued', 1)
  count(queue, 'retrying', 1)
  return 'retrying'
end

-- Pause a throttle key (or, for the key '', the whole worker) until until_ms.
local function pause_until(throttle_key, until_ms, now)
  local bucket_key = worker_bucket_key
  if throttle_key ~= '' then bucket_key = queue.key_bucket_prefix .. throttle_key end
  local previous = tonumber(redis.call('HGET', bucket_key, 'paused_until_ms'))
  if previous == nil or previous < until_ms then
    redis.call('HSET', bucket_key, 'paused_until_ms', until_ms)
    if throttle_key ~= '' then  -- kept until the pause ends at least (purge looks then)
      redis.call('PERSIST', bucket_key)  -- a TTL an earlier release set must not end it early
      local purge_at = tonumber(redis.call('ZSCORE', buckets_key, throttle_key))
      if purge_at == nil or purge_at < until_ms then redis.call('ZADD', buckets_key, until_ms, throttle_key) end
    end
  end
  local ready_ms = tonumber(redis.call('ZSCORE', queue.throttle_keys, throttle_key))
  if ready_ms ~= nil and ready_ms < until_ms then redis.call('ZADD', queue.throttle_keys, until_ms, throttle_key) end
end

-- A failed attempt. With retry_after_ms >= 0 (429/503 with Retry-After, or a receipt's
-- retryAfter) it is back-pressure: the key pauses, the job runs again then, and the
-- attempt is not counted. Otherwise it is retried after its backoff, or dead when it
-- was permanent or the last one allowed.
-- job = {attempt, max_attempts, seq, throttled (back-pressure retries so far), unsent
-- (attempts returned unsent so far), throttle_key}
local function fail_attempt(job_key, suffix, job, error_text, permanent, retry_after_ms, now)
  redis.call('HSET', job_key, 'last_error', error_text)
  local throttle_key = job.throttle_key or ''
  local throttled = tonumber(job.throttled) or 0
  if not permanent and retry_after_ms >= 0 and throttled < MAX_BACK_PRESSURE_RETRIES then
    redis.call('HSET', job_key, 'throttled', throttled + 1)
    local run_at = now + retry_after_ms
    pause_until(throttle_key, run_at, now)
    return retry_at(job_key, suffix, job.seq, throttle_key, run_at)
  end
  local failures = tonumber(job.attempt) - throttled - (tonumber(job.unsent) or 0)
  if permanent or failures >= tonumber(job.max_attempts) then
    return finish(job_key, suffix, 'dead', now, dead_retention_ms)
  end
  return retry_at(job_key, suffix, job.seq, throttle_key, now + backoff_ms(failures))
end

-- Tokens given back by return_unsent, per bucket, in this script call. While a claimed job
-- is out, its bucket refills as if the token were spent; had it not been claimed, a full
-- bucket would have lost that refill to its cap. So a refund forfeits, once per bucket and
-- call, the refill of the longest time a returned job was out (rate x that time): never
-- more tokens than the job's absence left room for.
local refunds = {}  -- bucket key -> {due = tokens to forfeit, forfeited = tokens forfeited so far}

local function refund_tokens(bucket_key, rate, burst, cost, out_ms, now)
  local r = refunds[bucket_key]
  if r == nil then r = {due = 0, forfeited = 0} refunds[bucket_key] = r end
  r.due = math.max(r.due, out_ms * rate / 1000)
  cost = math.min(cost, burst)
  local give = math.max(0, cost - (r.due - r.forfeited))
  r.forfeited = r.forfeited + (cost - give)
  local bucket = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
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
local function return_unsent(job_key, suffix, job, now)
  local throttle_key = job.throttle_key or ''
  local state = 'scheduled'
  if tonumber(job.attempt) - (tonumber(job.unsent) or 0) > 1 then state = 'retrying' end
  redis.call('HSET', job_key, 'state', state, 'unsent', (tonumber(job.unsent) or 0) + 1)
  push_job(queue, throttle_key, job.seq, suffix, math.min(tonumber(job.run_at_ms) or now, now))
  count(queue, 'queued', 1)
  if state == 'retrying' then count(queue, 'retrying', 1) end
  local limits = read_limits(queue)
  local cost = tonumber(job.cost) or 1
  local out_ms = math.max(0, now - (tonumber(job.claimed_ms) or now))
  if limits.rate then
    refund_tokens(queue.key_bucket_prefix .. throttle_key, limits.rate, limits.burst, cost, out_ms, now)
  end
  if limits.total_rate then
    refund_tokens(worker_bucket_key, limits.total_rate, limits.total_burst, cost, out_ms, now)
  end
  return 'returned'
end
