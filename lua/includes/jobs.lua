-- Shared by the scripts that read or change a worker's queue.
--
-- A worker's waiting jobs sit in one queue per throttle key (jobs without one have the
-- key ''), and the zset `throttle_keys` holds each key that has waiting jobs, scored by
-- the time it can next be served (its head's run_at, its next token, the end of a pause).
-- Claim looks only at keys whose time has come, so a throttled key costs nothing.
--!include common

-- A worker's queue, from the keys and prefixes a script is given first (in the order of
-- WorkerKeys.queue_keys and WorkerKeys.queue_args in keys.py).
local function new_queue(throttle_keys_key, seq_key, stats_key, limits_key, events_key,
                         queue_prefix, key_bucket_prefix, state_prefix, history_prefix)
  return {
    throttle_keys = throttle_keys_key, seq = seq_key, stats = stats_key, limits = limits_key, events = events_key,
    queue_prefix = queue_prefix, key_bucket_prefix = key_bucket_prefix, state_prefix = state_prefix,
    history_prefix = history_prefix,
    counts = {}, ready_ms = {},  -- pending counter changes, and key scores this call has seen
  }
end

-- The listings' indexes: a zset per state of the worker's jobs (suffix -> run_at_ms for
-- scheduled and retrying, finished_ms for the finished states; the running zset is the
-- worker-wide index of running jobs), and the same per throttle key for jobs that have
-- one (running scored by the attempt's start). Every change of a job's state goes
-- through moved(), so an index never disagrees with the jobs.
local function state_index(queue, state, throttle_key)
  if throttle_key == '' then return queue.state_prefix .. state end
  return queue.state_prefix .. state .. ':' .. throttle_key
end

-- The worker's event stream keeps this many entries (about: trimmed with MAXLEN ~).
local EVENTS_KEPT = 10000

-- A job moved from state `from` (nil: it is new) to `to` ('deleted': it is gone), with
-- `score` in the new state's index: update the indexes and add the event (the job's
-- suffix, new state, attempt).
local function moved(queue, suffix, throttle_key, from, to, score, attempt)
  throttle_key = throttle_key or ''
  if from then
    if from ~= 'running' then redis.call('ZREM', state_index(queue, from, ''), suffix) end
    if throttle_key ~= '' then redis.call('ZREM', state_index(queue, from, throttle_key), suffix) end
  end
  if to then
    if to ~= 'deleted' then
      if to ~= 'running' then redis.call('ZADD', state_index(queue, to, ''), score, suffix) end
      if throttle_key ~= '' then redis.call('ZADD', state_index(queue, to, throttle_key), score, suffix) end
    end
    redis.call('XADD', queue.events, 'MAXLEN', '~', EVENTS_KEPT, '*', 'job', suffix, 'state', to,
      'attempt', attempt or 0)
  end
end

-- Counters shown by GET /workers: queued (waiting, retrying included), retrying,
-- succeeded, dead, cancelled. Changes add up during the call; a script that counts must
-- call write_counts(queue) before it returns.
local function count(queue, field, delta)
  queue.counts[field] = (queue.counts[field] or 0) + delta
end

local function write_counts(queue)
  for field, delta in pairs(queue.counts) do
    if delta ~= 0 then redis.call('HINCRBY', queue.stats, field, delta) end
  end
  queue.counts = {}
end

-- The earliest time any throttle key can be served; nil when no job waits.
local function queue_head_ms(queue)
  local head = redis.call('ZRANGE', queue.throttle_keys, 0, 0, 'WITHSCORES')
  return tonumber(head[2])
end

-- Put a job (new or to be retried) on its throttle key's queue. The key becomes ready by
-- run_at_ms at the latest; a key that is paused or out of tokens is put back by claim.
local function push_job(queue, throttle_key, seq, suffix, run_at_ms)
  redis.call('ZADD', queue.queue_prefix .. throttle_key, run_at_ms, queue_member(seq, suffix))
  local ready_ms = queue.ready_ms[throttle_key]
  if ready_ms == nil then ready_ms = tonumber(redis.call('ZSCORE', queue.throttle_keys, throttle_key)) or false end
  if ready_ms == false or run_at_ms < ready_ms then
    redis.call('ZADD', queue.throttle_keys, run_at_ms, throttle_key)
    ready_ms = run_at_ms
  end
  queue.ready_ms[throttle_key] = ready_ms
end

-- Create a scheduled job. job = {args = JSON text, run_at_ms, max_attempts,
-- timeout_ms ('' or nil = the worker's live timeout), throttle_key ('' or nil = none),
-- cost (nil = 1), extra = optional flat list of further hash fields and values}.
-- Returns its sequence.
local function create_job(queue, job_key, suffix, job, now)
  local seq = redis.call('INCR', queue.seq)
  local throttle_key = job.throttle_key or ''
  local timeout_ms = job.timeout_ms
  if timeout_ms == nil or timeout_ms == '' then timeout_ms = false end
  if throttle_key == '' and (job.cost == nil or tonumber(job.cost) == 1) and not job.extra then
    if timeout_ms then  -- the common cases in one call each, without building a table
      redis.call('HSET', job_key, 'state', 'scheduled', 'args', job.args, 'run_at_ms', job.run_at_ms,
        'attempts', 0, 'max_attempts', job.max_attempts, 'created_ms', now, 'seq', seq, 'timeout_ms', timeout_ms)
    else
      redis.call('HSET', job_key, 'state', 'scheduled', 'args', job.args, 'run_at_ms', job.run_at_ms,
        'attempts', 0, 'max_attempts', job.max_attempts, 'created_ms', now, 'seq', seq)
    end
  else
    local fields = {'state', 'scheduled', 'args', job.args, 'run_at_ms', job.run_at_ms, 'attempts', 0,
      'max_attempts', job.max_attempts, 'created_ms', now, 'seq', seq}
    if timeout_ms then fields[#fields + 1] = 'timeout_ms'; fields[#fields + 1] = timeout_ms end
    if throttle_key ~= '' then fields[#fields + 1] = 'throttle_key'; fields[#fields + 1] = throttle_key end
    if job.cost ~= nil and tonumber(job.cost) ~= 1 then fields[#fields + 1] = 'cost'; fields[#fields + 1] = job.cost end
    for _, value in ipairs(job.extra or {}) do fields[#fields + 1] = value end
    redis.call('HSET', job_key, unpack(fields))
  end
  push_job(queue, throttle_key, seq, suffix, job.run_at_ms)
  moved(queue, suffix, throttle_key, nil, 'scheduled', job.run_at_ms, 0)
  count(queue, 'queued', 1)
  return seq
end

-- An operator's bulk call (retry, delete): the states a job may be in (a set, from their
-- comma-separated names), and the job suffixes it is about: argv[first..last] (mode
-- 'ids'), or the first argv[first] of the first state's index (mode 'index').
local function bulk_targets(queue, states_text, mode, argv, first, last)
  local allowed, first_state = {}, nil
  for state in string.gmatch(states_text, '[^,]+') do
    allowed[state] = true
    first_state = first_state or state
  end
  if mode == 'index' then
    return allowed, redis.call('ZRANGE', state_index(queue, first_state, ''), 0, tonumber(argv[first]) - 1)
  end
  local suffixes = {}
  for i = first, last do suffixes[#suffixes + 1] = argv[i] end
  return allowed, suffixes
end
