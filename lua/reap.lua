-- reap: fail the attempts whose lease ended before a receipt came ("timed out").
-- KEYS and ARGV as in includes/attempts.lua, then ARGV[LAST_POLICY_ARG + 1] most leases to reap
-- Returns {reaped, wait_ms until the next lease ends (-1 = none running)}
--!include common
--!include jobs
--!include attempts

local now = server_now_ms()
local expired = redis.call('ZRANGEBYSCORE', running_key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[LAST_POLICY_ARG + 1]))
for _, suffix in ipairs(expired) do
  redis.call('ZREM', running_key, suffix)
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, 'state', 'attempts', 'max_attempts', 'seq', 'throttled', 'throttle_key', 'unsent')
  if job[1] == 'running' then
    local attempt = tonumber(job[2])
    redis.call('HSET', job_key, 'settled_attempt', attempt, 'receipt_digest', 'timed out')
    fail_attempt(job_key, suffix, {
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
