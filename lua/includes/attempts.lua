-- Shared by the scripts that end an attempt (settle, reap); needs includes/common.lua.
-- They pass the same layout: KEYS[1] scheduled, KEYS[2] running, KEYS[3] finished, and
-- ARGV[1] job key prefix, ARGV[2] backoff initial ms, ARGV[3] backoff factor,
-- ARGV[4] backoff max ms, ARGV[5] jitter (1 or 0), ARGV[6] random seed,
-- ARGV[7] succeeded retention ms, ARGV[8] dead retention ms.
local scheduled_key, running_key, finished_key = KEYS[1], KEYS[2], KEYS[3]
local job_prefix = ARGV[1]
local backoff_initial_ms, backoff_factor, backoff_max_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local jitter = ARGV[5] == '1'
local succeeded_retention_ms, dead_retention_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
-- The seed comes from the caller so that the script stays deterministic for replication.
math.randomseed(tonumber(ARGV[6]))

local function backoff_ms(attempt)
  local delay = math.min(backoff_max_ms, backoff_initial_ms * backoff_factor ^ (attempt - 1))
  if jitter then delay = delay * math.random() end  -- full jitter
  return math.floor(delay)
end

local function finish(job_key, suffix, state, now, retention_ms)
  redis.call('HSET', job_key, 'state', state, 'finished_ms', now)
  redis.call('ZADD', finished_key, now + retention_ms, suffix)
  return state
end

-- A failed attempt: retried after its backoff (or the worker's Retry-After), or dead
-- when it was permanent or the last one allowed.
local function fail_attempt(job_key, suffix, attempt, max_attempts, seq, error_text, permanent, retry_after_ms, now)
  redis.call('HSET', job_key, 'last_error', error_text)
  if permanent or attempt >= max_attempts then
    return finish(job_key, suffix, 'dead', now, dead_retention_ms)
  end
  local delay_ms = backoff_ms(attempt)
  if retry_after_ms >= 0 then delay_ms = retry_after_ms end
  local run_at = now + delay_ms
  redis.call('HSET', job_key, 'state', 'retrying', 'run_at_ms', run_at)
  redis.call('ZADD', scheduled_key, run_at, queue_member(seq, suffix))
  return 'retrying'
end
