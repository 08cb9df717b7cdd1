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
-- job = {attempt, max_attempts, seq, throttled (back-pressure retries so far), throttle_key}
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
  local failures = tonumber(job.attempt) - throttled
  if permanent or failures >= tonumber(job.max_attempts) then
    return finish(job_key, suffix, 'dead', now, dead_retention_ms)
  end
  return retry_at(job_key, suffix, job.seq, throttle_key, now + backoff_ms(failures))
end
