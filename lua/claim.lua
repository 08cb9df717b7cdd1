-- claim: move due jobs from their throttle keys' queues to running, as many as the limits
-- allow (each key's token bucket, the worker-wide bucket, the concurrency cap), each with
-- a lease that ends at now + its timeout. Keys whose time has come are served in turn:
-- a key that was just served goes behind the keys that are still waiting, so one busy
-- key cannot hold back the others.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then running zset, worker bucket hash,
--   dispatched hash
-- ARGV: the queue's args (WorkerKeys.queue_args), then job key prefix, most jobs to claim
-- Returns {wait_ms, capped, then 5 per claimed job: suffix, attempt, timeout_ms, args, seq}
--   wait_ms  0: more jobs may be due now;  > 0: the next job or token is due in that many ms;
--           -1: nothing is scheduled;      -2: every concurrency slot is taken (look again after a settle);
--           -3: the worker is paused by an operator (look again after a resume).
--   capped   1 when the worker has a concurrency cap (a settle frees a slot: wake the claimers).
--!include common
--!include jobs
local queue, next_key, next_arg = queue_from(1, 1)
local running_key, worker_bucket_key, dispatched_key = KEYS[next_key], KEYS[next_key + 1], KEYS[next_key + 2]
local job_prefix, most = ARGV[next_arg], tonumber(ARGV[next_arg + 1])
local limits = read_limits(queue)
local capped = 0
if limits.concurrency then capped = 1 end
if limits.paused then return {-3, capped} end
local now = server_now_ms()

-- A worker that answered 429 or 503 with Retry-After for a job without a throttle key.
local worker_bucket = redis.call('HMGET', worker_bucket_key, 'tokens', 'updated_ms', 'paused_until_ms')
local worker_paused_until = tonumber(worker_bucket[3])
if worker_paused_until and worker_paused_until > now then return {worker_paused_until - now, capped} end

local allowed = most
local free_slots = nil
if limits.concurrency then
  free_slots = limits.concurrency - redis.call('ZCARD', running_key)
  if free_slots <= 0 then return {-2, capped} end
  allowed = math.min(allowed, free_slots)
end
local total_tokens = nil
if limits.total_rate then
  total_tokens = bucket_level(worker_bucket[1], worker_bucket[2], limits.total_rate, limits.total_burst, now)
end
local total_needed = nil  -- tokens the worker-wide bucket lacked for the next job

local DEFAULT_TIMEOUT_MS = 30000  -- config.py's default, for a worker whose limits were never seeded
local out = {0, capped}
local claimed = 0

local function take(job_key, suffix, timeout_ms, args, seq, state)
  local attempt = redis.call('HINCRBY', job_key, 'attempts', 1)
  local lease_deadline_ms = now + timeout_ms
  redis.call('HSET', job_key, 'state', 'running', 'lease_deadline_ms', lease_deadline_ms, 'lease_timeout_ms', timeout_ms)
  redis.call('ZADD', running_key, lease_deadline_ms, suffix)
  count(queue, 'queued', -1)
  if state == 'retrying' then count(queue, 'retrying', -1) end
  out[#out + 1] = suffix
  out[#out + 1] = attempt
  out[#out + 1] = timeout_ms
  out[#out + 1] = args
  out[#out + 1] = seq  -- the enqueue sequence: tells this job from a later one with its id
  claimed = claimed + 1
end

-- Serve one throttle key: take up to `share` of its due jobs; returns when it can next be
-- served (nil when its queue is empty, false to leave its place as it is).
local function serve(throttle_key, share)
  local queue_key = queue.queue_prefix .. throttle_key
  local bucket_key = queue.key_bucket_prefix .. throttle_key
  local bucket = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms', 'paused_until_ms')
  local paused_until = tonumber(bucket[3])
  if paused_until and paused_until > now then
    if redis.call('ZCARD', queue_key) == 0 then return nil end
    return paused_until
  end
  local tokens = nil
  if limits.rate then tokens = bucket_level(bucket[1], bucket[2], limits.rate, limits.burst, now) end
  local taken = 0
  local next_ms = nil
  while true do
    local head = redis.call('ZRANGE', queue_key, 0, 0, 'WITHSCORES')
    if head[1] == nil then break end
    local run_at = tonumber(head[2])
    if run_at > now then next_ms = run_at break end
    local suffix = suffix_of_member(head[1])
    local job_key = job_prefix .. suffix
    local job = redis.call('HMGET', job_key, 'state', 'cost', 'timeout_ms', 'args', 'seq')
    if not job[1] then
      redis.call('ZREM', queue_key, head[1])  -- its hash is gone: nothing to run
    else
      local cost = tonumber(job[2]) or 1
      if limits.burst then cost = math.min(cost, limits.burst) end  -- a burst lowered live
      if tokens ~= nil and tokens + 1e-9 < cost then
        next_ms = now + math.ceil((cost - tokens) * 1000 / limits.rate)
        break
      end
      -- It could go now: but the key has had its share of this claim, or the claim is full.
      if taken >= share or claimed >= allowed then next_ms = now break end
      local total_cost = nil
      if total_tokens ~= nil then
        total_cost = math.min(cost, limits.total_burst)
        if total_tokens + 1e-9 < total_cost then
          total_needed = total_cost - total_tokens
          next_ms = false
          if taken > 0 then next_ms = now end
          break
        end
      end
      redis.call('ZREM', queue_key, head[1])
      take(job_key, suffix, tonumber(job[3]) or limits.timeout_ms or DEFAULT_TIMEOUT_MS, job[4], job[5], job[1])
      taken = taken + 1
      if tokens ~= nil then tokens = tokens - cost end
      if total_cost ~= nil then total_tokens = total_tokens - total_cost end
    end
  end
  if tokens ~= nil and taken > 0 then
    redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
    -- An untouched bucket refills to full: let it go once it has.
    redis.call('PEXPIRE', bucket_key, math.ceil((limits.burst - tokens) * 1000 / limits.rate) + 1000)
  end
  return next_ms
end

local ready = redis.call('ZRANGEBYSCORE', queue.throttle_keys, '-inf', now, 'LIMIT', 0, allowed)
local share = math.max(1, math.ceil(allowed / math.max(1, #ready)))
for _, throttle_key in ipairs(ready) do
  if claimed >= allowed or total_needed then break end
  local next_ms = serve(throttle_key, share)
  if next_ms == nil then
    redis.call('ZREM', queue.throttle_keys, throttle_key)
  elseif next_ms then
    redis.call('ZADD', queue.throttle_keys, next_ms, throttle_key)
  end
end

if total_tokens ~= nil and claimed > 0 then
  redis.call('HSET', worker_bucket_key, 'tokens', string.format('%.6f', total_tokens), 'updated_ms', now)
end
if claimed > 0 then
  -- Jobs claimed per second over the last minute: one slot per second, reused a minute later.
  local second = math.floor(now / 1000)
  local slot = tostring(second % 60)
  local n = claimed
  local previous = redis.call('HGET', dispatched_key, slot)
  if previous then
    local at, seen = string.match(previous, '^(%d+):(%d+)$')
    if tonumber(at) == second then n = n + tonumber(seen) end
  end
  redis.call('HSET', dispatched_key, slot, second .. ':' .. n)
end

-- When can the next claim succeed?
if claimed < most then
  if free_slots ~= nil and free_slots - claimed <= 0 then
    out[1] = -2
  else
    local head_ms = queue_head_ms(queue)
    if head_ms == nil then
      out[1] = -1
    else
      local wait_ms = math.max(0, head_ms - now)
      if total_needed then
        wait_ms = math.max(wait_ms, math.ceil(total_needed * 1000 / limits.total_rate))
      end
      out[1] = wait_ms
    end
  end
end
return out
