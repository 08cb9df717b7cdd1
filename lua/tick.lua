-- tick: fire due cron schedules: create each tick's job exactly as enqueue does, then move
-- the schedule on to its next fire time.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), the schedules zset, then per schedule:
--   its hash, its jobs list, and one job hash per tick to fire
-- ARGV: the queue's args (WorkerKeys.queue_args), not_before_ms (nothing fires before it:
--   the ticks' jobs are created at most a lead ahead of their time), the worker's default max_attempts and timeout_ms, the
--   number of schedules, then per schedule: suffix, expected next_fire_ms,
--   expected revision, new next_fire_ms, number of ticks, then per tick: job suffix, fire_ms
-- Returns {now_ms, wake, then per schedule: ticks fired (jobs created), or -1 when the
-- schedule changed since the coordinator read it (deleted, paused, updated, or another
-- coordinator fired it first) or its new next fire time has already passed: then nothing
-- is written for it}; or {now_ms, 'early'} when not_before_ms has not come yet (nothing written).
-- A tick's job id comes from the schedule id and the tick time, and a job that already
-- exists is left alone, so a tick can never produce two jobs. wake is 1 when a new job is
-- due before the previous head of the queue, as in enqueue.
--!include common
--!include jobs
--!include slot
local KEYS = keys_past_probes(KEYS)
local JOBS_KEPT = 10
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local schedules_key = KEYS[6]
local not_before_ms = tonumber(ARGV[5])
local default_max_attempts, default_timeout_ms = ARGV[6], ARGV[7]
local schedule_count = tonumber(ARGV[8])
local k, a = 7, 9  -- the next KEYS and ARGV entries: the schedules' own
local now = server_now_ms()
if now < not_before_ms then return {now, 'early'} end

local head_ms = queue_head_ms(queue)
local earliest_new_ms = nil
local out = {now, 0}

local function or_default(value, default)
  if value == false or value == '' then return default end
  return value
end

for _ = 1, schedule_count do
  local schedule_key, jobs_key = KEYS[k], KEYS[k + 1]
  k = k + 2
  local suffix, expected_next_ms, expected_revision = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local new_next_ms, tick_count = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  a = a + 5
  local spec = redis.call('HMGET', schedule_key, 'next_fire_ms', 'revision', 'paused', 'args',
    'max_attempts', 'timeout_ms', 'throttle_key', 'cost')
  local current = tonumber(spec[1]) == expected_next_ms and tonumber(spec[2]) == expected_revision
    and spec[3] == '0' and new_next_ms > now
  local fired = 0
  local last_fire_ms, last_job = nil, nil
  for _ = 1, tick_count do
    local job_key, job_suffix, fire_ms = KEYS[k], ARGV[a], tonumber(ARGV[a + 1])
    k = k + 1
    a = a + 2
    if current then
      if redis.call('EXISTS', job_key) == 0 then
        create_job(queue, job_key, job_suffix, {
          args = spec[4], run_at_ms = fire_ms,
          max_attempts = or_default(spec[5], default_max_attempts),
          timeout_ms = or_default(spec[6], default_timeout_ms),
          throttle_key = or_default(spec[7], nil), cost = or_default(spec[8], nil),
          extra = {F.schedule, suffix},
        }, now)
        redis.call('LPUSH', jobs_key, job_suffix)
        fired = fired + 1
        if earliest_new_ms == nil or fire_ms < earliest_new_ms then earliest_new_ms = fire_ms end
      end
      last_fire_ms, last_job = fire_ms, job_suffix
    end
  end
  if current then
    redis.call('LTRIM', jobs_key, 0, JOBS_KEPT - 1)
    redis.call('HSET', schedule_key, 'next_fire_ms', new_next_ms)
    if last_fire_ms ~= nil then redis.call('HSET', schedule_key, 'last_fire_ms', last_fire_ms, 'last_job', last_job) end
    redis.call('ZADD', schedules_key, new_next_ms, suffix)
    out[#out + 1] = fired
  else
    out[#out + 1] = -1
  end
end

if earliest_new_ms ~= nil and (head_ms == nil or earliest_new_ms < head_ms) then out[2] = 1 end
write_counts(queue)
return out
