#!lua flags=allow-oom
-- reap: fail the attempts whose lease ended before a receipt came ("timed out").
-- KEYS: the queue's keys (WorkerKeys.queue_keys), running zset, finished zset, worker bucket
--   hash, buckets zset (throttle key -> when its bucket is full)
-- ARGV: the queue's args (WorkerKeys.queue_args), job key prefix, backoff initial ms, backoff
--   factor, backoff max ms, jitter (1 or 0), random seed, succeeded retention ms, dead
--   retention ms, most leases to reap, not_after_ms (Redis time; '' = none)
-- Returns {reaped, wait_ms until the next lease ends (-1 = none running)}
-- A reap that runs after not_after_ms does nothing and answers {0, 0}: its caller gave up
-- waiting for it (Redis did not answer in time), so it may be running late, after an
-- outage, before the answers that the coordinators held through the outage are settled.
--!include common
--!include jobs
--!include attempts
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
local running_key, finished_key, worker_bucket_key, buckets_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local job_prefix, most, not_after_ms = ARGV[3], tonumber(ARGV[11]), tonumber(ARGV[12])
local policy = retry_policy(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[9], ARGV[10])
math.randomseed(tonumber(ARGV[8]))  -- the caller's seed keeps the script deterministic for replication
local worker = attempts_of(queue, finished_key, worker_bucket_key, buckets_key, policy)

local now = server_now_ms()
if not_after_ms and now > not_after_ms then return {0, 0} end
local expired = redis.call('ZRANGEBYSCORE', running_key, '-inf', now, 'LIMIT', 0, most)
for _, suffix in ipairs(expired) do
  redis.call('ZREM', running_key, suffix)
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, 'state', 'attempts', 'max_attempts', 'seq', 'throttled', 'throttle_key', 'unsent')
  if job[1] == 'running' then
    local attempt = tonumber(job[2])
    redis.call('HSET', job_key, 'settled_attempt', attempt, 'receipt_digest', 'timed out')
    fail_attempt(worker, job_key, suffix, {
      attempt = attempt, max_attempts = job[3], seq = job[4], throttled = job[5], throttle_key = job[6],
      unsent = job[7],
    }, 'timed out', false, -1, now)
  end
end

write_counts(queue)
local next_lease = redis.call('ZRANGE', running_key, 0, 0, 'WITHSCORES')
local wait_ms = -1
if next_lease[1] then wait_ms = math.max(0, tonumber(next_lease[2]) - now) end
return {#expired, wait_ms}
