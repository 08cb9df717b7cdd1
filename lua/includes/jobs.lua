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
    throttle_keys = throttle_keys_key, seq = seq_key, stats = stats_key, limits = limits_key, events_key = events_key,
    queue_prefix = queue_prefix, key_bucket_prefix = key_bucket_prefix, state_prefix = state_prefix,
    history_prefix = history_prefix,
    counts = {}, ready_ms = {},  -- pending counter changes, and key scores this call has seen
    events = {}, event_count = 0,  -- this call's events, for write_counts' one stream entry
  }
end

-- The listings' indexes: a zset per state of the worker's jobs (suffix -> run_at_ms for
-- scheduled and retrying, finished_ms for the finished states; the running zset is the
-- worker-wide index of running jobs), and the same per throttle key for jobs that have
-- one (running scored by the attempt's start). Every change of a job's state goes
-- through moved(), so an index never disagrees with the jobs.
-- A scheduled job is listed from its queue, which holds it by run_at_ms already
-- (lua/list_scheduled.lua): the scheduled index holds only the jobs that have a throttle
-- key (the worker-wide listing reads the no-key queue beside it), and there is no
-- scheduled index per throttle key (the key's queue is one). An earlier version indexed
-- every scheduled job: moved() still removes a job from those indexes when it leaves.
local function state_index(queue, state, throttle_key)
  if throttle_key == '' then return queue.state_prefix .. state end
  return queue.state_prefix .. state .. ':' .. throttle_key
end

-- The worker's event stream keeps about its last EVENTS_KEPT events. An entry holds one
-- script call's events (see write_counts), so it is trimmed by events, not entries: the
-- stats hash's `events_in_stream` counts the events its entries hold, and once that passes
-- EVENTS_KEPT + EVENTS_SLACK the oldest entries go (XDEL) while the others hold
-- EVENTS_KEPT events without them. (The slack spares most calls reading the oldest
-- entries. Should the count go wrong, as when the stream is deleted and the count kept,
-- the stream still holds at most about twice that, and the count comes right once the
-- stream is short.)
local EVENTS_KEPT = 10000
local EVENTS_SLACK = 1000
local TRIM_PAGE = 10  -- oldest entries read at a time to trim

-- How many events a stream entry holds: its field `n` (an entry written before events were
-- batched has fields job, state, attempt: one event).
local function events_in_entry(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then return tonumber(fields[i + 1]) end
  end
  return 1
end

-- Drop the stream's oldest entries while the others hold EVENTS_KEPT events; `held` is the
-- events it holds, `newest` the id of the entry just added (never dropped). Returns the
-- events it holds after.
local function trim_events(queue, held, newest)
  if held <= EVENTS_KEPT + EVENTS_SLACK then return held end
  while held > EVENTS_KEPT do
    local oldest = redis.call('XRANGE', queue.events_key, '-', '+', 'COUNT', TRIM_PAGE)
    local drop = {}
    for _, entry in ipairs(oldest) do
      local n = events_in_entry(entry[2])
      if entry[1] == newest then held = n; break end  -- all before it dropped: the count is n
      if held - n < EVENTS_KEPT then break end
      held = held - n
      drop[#drop + 1] = entry[1]
    end
    if #drop > 0 then redis.call('XDEL', queue.events_key, unpack(drop)) end
    if #drop < TRIM_PAGE then break end
  end
  return held
end

-- A job moved from state `from` (nil: it is new) to `to` ('deleted': it is gone), with
-- `score` in the new state's index: update the indexes and note the event (the job's
-- suffix, new state, attempt) for write_counts.
local function moved(queue, suffix, throttle_key, from, to, score, attempt)
  throttle_key = throttle_key or ''
  if from then
    if from ~= 'running' then redis.call('ZREM', state_index(queue, from, ''), suffix) end
    if throttle_key ~= '' then redis.call('ZREM', state_index(queue, from, throttle_key), suffix) end
  end
  if to then
    if to == 'scheduled' then
      if throttle_key ~= '' then redis.call('ZADD', state_index(queue, to, ''), score, suffix) end
    elseif to ~= 'deleted' then
      if to ~= 'running' then redis.call('ZADD', state_index(queue, to, ''), score, suffix) end
      if throttle_key ~= '' then redis.call('ZADD', state_index(queue, to, throttle_key), score, suffix) end
    end
    -- runs of events with the same state and attempt: '<state> <attempt> <suffix> <suffix> ...'
    local head = to .. ' ' .. (attempt or 0)
    local parts = queue.events  -- joined by write_counts: each part has its separator before it
    if queue.run_head ~= head then
      parts[#parts + 1] = (#parts == 0 and '' or ';') .. head
      queue.run_head = head
    end
    parts[#parts + 1] = ' ' .. suffix
    queue.event_count = queue.event_count + 1
  end
end

-- Counters shown by GET /workers: queued (waiting, retrying included), retrying,
-- succeeded, dead, cancelled. Changes add up during the call; a script that counts or
-- moves jobs must call write_counts(queue) before it returns.
local function count(queue, field, delta)
  queue.counts[field] = (queue.counts[field] or 0) + delta
end

-- Writes what the call collected: the counter changes, and its events as ONE entry of the
-- worker's stream (one XADD per call, not one per job: a claim of 256 jobs is one entry):
-- field `n`, how many events; field `events`, the events in the order they happened, as
-- runs of those with the same state and attempt, '<state> <attempt> <suffix> ...', the
-- runs joined by ';' (a job suffix has no space nor ';': keys.py JOB_SUFFIX_RE). E.g.
-- 'succeeded 1 job-a job-b;retrying 1 job-c'.
local function write_counts(queue)
  local events = queue.event_count
  if events > 0 then count(queue, 'events_in_stream', events) end
  local held = nil
  for field, delta in pairs(queue.counts) do
    if delta ~= 0 then
      local total = redis.call('HINCRBY', queue.stats, field, delta)
      if field == 'events_in_stream' then held = total end
    end
  end
  queue.counts = {}
  if events > 0 then
    local newest = redis.call('XADD', queue.events_key, '*', 'n', events, 'events', table.concat(queue.events))
    queue.events, queue.event_count, queue.run_head = {}, 0, nil
    local kept = trim_events(queue, held, newest)
    if kept ~= held then redis.call('HSET', queue.stats, 'events_in_stream', kept) end
  end
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
      redis.call('HSET', job_key, F.state, 'scheduled', F.args, job.args, F.run_at_ms, job.run_at_ms,
        F.attempts, 0, F.max_attempts, job.max_attempts, F.created_ms, now, F.seq, seq, F.timeout_ms, timeout_ms)
    else
      redis.call('HSET', job_key, F.state, 'scheduled', F.args, job.args, F.run_at_ms, job.run_at_ms,
        F.attempts, 0, F.max_attempts, job.max_attempts, F.created_ms, now, F.seq, seq)
    end
  else
    local fields = {F.state, 'scheduled', F.args, job.args, F.run_at_ms, job.run_at_ms, F.attempts, 0,
      F.max_attempts, job.max_attempts, F.created_ms, now, F.seq, seq}
    if timeout_ms then fields[#fields + 1] = F.timeout_ms; fields[#fields + 1] = timeout_ms end
    if throttle_key ~= '' then fields[#fields + 1] = F.throttle_key; fields[#fields + 1] = throttle_key end
    if job.cost ~= nil and tonumber(job.cost) ~= 1 then fields[#fields + 1] = F.cost; fields[#fields + 1] = job.cost end
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
