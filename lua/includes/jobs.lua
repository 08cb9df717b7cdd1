-- Shared by the scripts that read or change a worker's queue.
--
-- A worker's waiting jobs sit in one queue per throttle key (jobs without one have the
-- key ''), and the zset `throttle_keys` holds each key that has waiting jobs, scored by
-- the time it can next be served (its head's run_at, its next token, the end of a pause).
-- Claim looks only at keys whose time has come, so a throttled key costs nothing.
--!include common

-- A worker's queue, from the keys and prefixes a script is given first (in the order of
-- WorkerKeys.queue_keys and WorkerKeys.queue_args in keys.py).
local function new_queue(throttle_keys_key, seq_key, stats_key, limits_key, queue_prefix, key_bucket_prefix)
  return {
    throttle_keys = throttle_keys_key, seq = seq_key, stats = stats_key, limits = limits_key,
    queue_prefix = queue_prefix, key_bucket_prefix = key_bucket_prefix,
    counts = {}, ready_ms = {},  -- pending counter changes, and key scores this call has seen
  }
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
  count(queue, 'queued', 1)
  return seq
end
