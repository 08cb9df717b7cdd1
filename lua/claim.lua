-- claim: move due jobs from scheduled to running, as many as the worker's token bucket
-- and concurrency cap allow, each with a lease that ends at now + its timeout.
-- KEYS[1] scheduled zset, KEYS[2] running zset, KEYS[3] bucket hash
-- ARGV[1] job key prefix, ARGV[2] most jobs to claim, ARGV[3] rate per second ('' = unlimited),
-- ARGV[4] burst, ARGV[5] concurrency ('' = unlimited)
-- Returns {wait_ms, then 5 per claimed job: suffix, attempt, timeout_ms, args, seq}
--   wait_ms  0: more jobs may be due now;  > 0: the next job or token is due in that many ms;
--           -1: nothing is scheduled;      -2: every concurrency slot is taken (look again after a settle).
--!include common
local scheduled_key, running_key, bucket_key = KEYS[1], KEYS[2], KEYS[3]
local job_prefix = ARGV[1]
local most = tonumber(ARGV[2])
local rate, burst, concurrency = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = server_now_ms()

local allowed = most
local free_slots = nil
if concurrency then
  free_slots = concurrency - redis.call('ZCARD', running_key)
  allowed = math.min(allowed, free_slots)
end
local tokens = nil
if rate then
  local bucket = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
  tokens = burst
  if bucket[1] then
    local elapsed_ms = math.max(0, now - tonumber(bucket[2]))
    tokens = math.min(burst, tonumber(bucket[1]) + elapsed_ms * rate / 1000)
  end
  allowed = math.min(allowed, math.floor(tokens + 1e-9))
end

local out = {0}
local claimed = 0
if allowed > 0 then
  local due = redis.call('ZRANGEBYSCORE', scheduled_key, '-inf', now, 'LIMIT', 0, allowed)
  for _, member in ipairs(due) do
    redis.call('ZREM', scheduled_key, member)
    local suffix = suffix_of_member(member)
    local job_key = job_prefix .. suffix
    local job = redis.call('HMGET', job_key, 'timeout_ms', 'args', 'seq')
    if job[1] then
      local attempt = redis.call('HINCRBY', job_key, 'attempts', 1)
      local lease_deadline_ms = now + tonumber(job[1])
      redis.call('HSET', job_key, 'state', 'running', 'lease_deadline_ms', lease_deadline_ms)
      redis.call('ZADD', running_key, lease_deadline_ms, suffix)
      out[#out + 1] = suffix
      out[#out + 1] = attempt
      out[#out + 1] = job[1]
      out[#out + 1] = job[2]
      out[#out + 1] = job[3]  -- the enqueue sequence: tells this job from a later one with its id
      claimed = claimed + 1
    end
  end
end
if rate then
  tokens = tokens - claimed
  redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
end

-- When can the next claim succeed?
if claimed < most then
  local head = redis.call('ZRANGE', scheduled_key, 0, 0, 'WITHSCORES')
  if head[1] == nil then
    out[1] = -1
  else
    local wait_ms = math.max(0, tonumber(head[2]) - now)
    if free_slots ~= nil and free_slots - claimed <= 0 then
      out[1] = -2
    else
      if tokens ~= nil and tokens < 1 then
        wait_ms = math.max(wait_ms, math.ceil((1 - tokens) * 1000 / rate))
      end
      out[1] = wait_ms
    end
  end
end
return out
