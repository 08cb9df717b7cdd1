-- enqueue: add jobs to a worker's schedule. A job whose id already exists is left as it is.
-- KEYS[1] scheduled zset, KEYS[2] enqueue sequence, KEYS[3..] one job hash per job
-- ARGV, 6 per job: suffix, args (JSON text), run_at_ms ('' = now + delay_ms), delay_ms,
--   max_attempts, timeout_ms
-- Returns {now_ms, wake, one entry per job}: the entry is the new job's run_at_ms, or
-- the existing job's fields (HGETALL). wake is 1 when a new job is due before the
-- previous head of the schedule, so sleeping dispatchers should look again.
--!include common
local scheduled_key, seq_key = KEYS[1], KEYS[2]
local now = server_now_ms()

local head = redis.call('ZRANGE', scheduled_key, 0, 0, 'WITHSCORES')
local head_ms = tonumber(head[2])
local earliest_new_ms = nil
local out = {now, 0}

for i = 3, #KEYS do
  local job_key = KEYS[i]
  local a = (i - 3) * 6
  local existing = redis.call('HGETALL', job_key)
  if #existing > 0 then
    out[#out + 1] = existing
  else
    local run_at = tonumber(ARGV[a + 3])
    if run_at == nil then run_at = now + tonumber(ARGV[a + 4]) end
    local seq = redis.call('INCR', seq_key)
    redis.call('HSET', job_key,
      'state', 'scheduled', 'args', ARGV[a + 2], 'run_at_ms', run_at, 'attempts', 0,
      'max_attempts', ARGV[a + 5], 'timeout_ms', ARGV[a + 6], 'created_ms', now, 'seq', seq)
    redis.call('ZADD', scheduled_key, run_at, queue_member(seq, ARGV[a + 1]))
    out[#out + 1] = run_at
    if earliest_new_ms == nil or run_at < earliest_new_ms then earliest_new_ms = run_at end
  end
end

if earliest_new_ms ~= nil and (head_ms == nil or earliest_new_ms < head_ms) then out[2] = 1 end
return out
