#!lua flags=allow-oom
-- reap: fail the attempts whose lease ended before a receipt came ("timed out").
-- KEYS: the queue's keys (WorkerKeys.queue_keys), running zset, worker bucket hash, buckets
--   zset (throttle key -> when its bucket is full)
-- ARGV: the queue's args (WorkerKeys.queue_args), job key prefix, backoff initial ms, backoff
--   factor, backoff max ms, jitter (1 or 0), random seed, most leases to reap, not_after_ms
--   (Redis time; '' = none)
-- Returns {reaped, wait_ms until the next lease ends (-1 = none running), then 3 per
--   attempt it ended: suffix, attempt, what became of the job (retrying | dead)}
-- A reap that runs after not_after_ms does nothing and answers {0, 0}: its caller gave up
-- waiting for it (Redis did not answer in time), so it may be running late, after an
-- outage, before the answers that the coordinators held through the outage are settled.
--!include common
--!include jobs
--!include attempts
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local running_key, worker_bucket_key, buckets_key = KEYS[6], KEYS[7], KEYS[8]
local job_prefix, most, not_after_ms = ARGV[5], tonumber(ARGV[11]), tonumber(ARGV[12])
local policy = retry_policy(ARGV[6], ARGV[7], ARGV[8], ARGV[9])
math.randomseed(tonumber(ARGV[10]))  -- the caller's seed keeps the script deterministic for replication
local worker = attempts_of(queue, worker_bucket_key, buckets_key, policy)

local now = server_now_ms()
if not_after_ms and now > not_after_ms then return {0, 0} end
local ended = {}
local expired = redis.call('ZRANGEBYSCORE', running_key, '-inf', now, 'LIMIT', 0, most)
for _, suffix in ipairs(expired) do
  redis.call('ZREM', running_key, suffix)
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, F.state, F.attempts, F.max_attempts, F.seq, F.throttled, F.throttle_key,
    F.unsent, F.started_ms, F.sent_by)
  if job[1] == 'running' then
    local attempt = tonumber(job[2])
    redis.call('HSET', job_key, F.settled_attempt, attempt, F.receipt_digest, 'timed out')
    local word = fail_attempt(worker, job_key, suffix, {
      state = 'running', attempt = attempt, max_attempts = job[3], seq = job[4], throttled = job[5],
      throttle_key = job[6], unsent = job[7], started_ms = job[8], sent_by = job[9],
    }, 'timed out', false, -1, now, 'timed out', 0)
    ended[#ended + 1] = suffix
    ended[#ended + 1] = attempt
    ended[#ended + 1] = word
  end
end

write_counts(queue)
local next_lease = redis.call('ZRANGE', running_key, 0, 0, 'WITHSCORES')
local wait_ms = -1
if next_lease[1] then wait_ms = math.max(0, tonumber(next_lease[2]) - now) end
local out = {#expired, wait_ms}
for _, value in ipairs(ended) do out[#out + 1] = value end
return out
