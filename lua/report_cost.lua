#!lua flags=allow-oom
-- report_cost: what the downstream API told the worker about one call, applied to the
-- buckets its job drew on (README, Buckets that follow the downstream):
--   the actual cost of the call, after the job's requested cost was taken at its claim:
--     the difference is given back to (or taken from) every bucket the claim drew on, the
--     worker's own and its shared limits' (a bucket may go below zero: later jobs wait);
--   the downstream's own level of the key's bucket (GraphQL's currentlyAvailable, what is
--     left of Shopify's 40 REST calls): taken as the key's level when it is lower than
--     redisq's, less what redisq took from the key since this job's claim and has had no
--     report of yet (calls sent after it that the downstream had not counted yet: a later
--     call answered first was counted first). So calls made outside redisq count too.
--     Given the downstream bucket's size, the level is counted in redisq's burst: the
--     headroom the burst keeps below the size (39 of Shopify's 40) is kept below it too.
--     It applies to the key's buckets of the shared limits the worker names, or to the
--     worker's own key bucket when it names none.
-- Also what the call's answer means for the shared limits the worker names: back-pressure
-- (a 429 or 503 with Retry-After) pauses the key's bucket of each until then, for every
-- worker naming it, as settle pauses the worker's own; a call returned unsent cost the
-- downstream nothing (scope 'shared': settle gives the worker's own buckets back).
-- Once per attempt: a repeated report changes nothing.
-- KEYS: the job, the worker's limits hash, worker bucket, buckets zset (throttle key -> when
--   its bucket is full), then per shared limit the worker names LimitKeys.claim_keys
-- ARGV: the attempt, the actual cost ('' = not reported), the downstream's level ('' = not
--   reported), the downstream bucket's size ('' = not reported), retry_after_ms (-1 = no
--   back-pressure), scope ('all' | 'shared': the shared limits' buckets only), the worker's
--   key bucket prefix, then per shared limit LimitKeys.claim_args
-- Returns 'applied' | 'duplicate' | 'stale' (another attempt runs, or the job is gone).
--!include common
--!include shared
--!include slot
local KEYS = keys_past_probes(KEYS)
local job_key, limits_key, worker_bucket_key, buckets_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local attempt, actual, available = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket_size, retry_after_ms, scope, key_bucket_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local shared = read_shared_limits(KEYS, 5, ARGV, 8, (#KEYS - 4) / SHARED_KEYS)

local job = redis.call('HMGET', job_key, F.attempts, F.cost, F.throttle_key, F.cost_reported)
if not job[1] or tonumber(job[1]) ~= attempt then return 'stale' end
if tonumber(job[4]) == attempt then return 'duplicate' end
redis.call('HSET', job_key, F.cost_reported, attempt)
local cost, throttle_key = tonumber(job[2]) or 1, job[3] or ''
local now = server_now_ms()
local limits = read_limits(limits_key)
-- Beside a shared key's bucket, the reports of its latest calls: member '<mark>:<cost>'
-- scored by the call's mark (the key's tokens taken up to its claim), the latest REPORTS_KEPT.
local REPORTED_SUFFIX, REPORTS_KEPT = ':reported', 256
local downstream_is_shared = false
for _, limit in ipairs(shared) do
  if limit.rate then downstream_is_shared = true end
end

-- The bucket at bucket_key after the report; `level_applies`: the downstream's level is of it.
local function adjusted(bucket_key, rate, burst, level_applies, taken_mark_field)
  local b = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms', 'taken')
  local mark = taken_mark_field and tonumber(redis.call('HGET', job_key, taken_mark_field))
  local tokens = bucket_level(b[1], b[2], rate, burst, now)
  if actual then tokens = tokens + math.min(cost, burst) - actual end
  if level_applies and available then
    local sent_since = 0
    local taken = tonumber(b[3]) or 0
    if mark and taken >= mark then
      sent_since = taken - mark
      for _, entry in ipairs(redis.call('ZRANGEBYSCORE', bucket_key .. REPORTED_SUFFIX, '(' .. mark, '+inf')) do
        sent_since = sent_since - tonumber(string.match(entry, ':(.*)$'))
      end
    end
    local headroom = 0
    if bucket_size then headroom = math.max(0, bucket_size - burst) end
    tokens = math.min(tokens, available - headroom - sent_since)
  end
  tokens = math.max(-burst, math.min(burst, tokens))
  redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
  if mark then  -- this call is reported: an earlier one's report no longer counts it as unseen
    local reported_key = bucket_key .. REPORTED_SUFFIX
    redis.call('ZADD', reported_key, mark, string.format('%.6f:%.6f', mark, math.min(cost, burst)))
    redis.call('ZREMRANGEBYRANK', reported_key, 0, -(REPORTS_KEPT + 1))
  end
  return tokens
end

if limits.rate and scope == 'all' then
  local tokens = adjusted(key_bucket_prefix .. throttle_key, limits.rate, limits.burst, not downstream_is_shared, nil)
  redis.call('PERSIST', key_bucket_prefix .. throttle_key)
  redis.call('ZADD', buckets_key, now + math.ceil((limits.burst - tokens) * 1000 / limits.rate), throttle_key)
end
if limits.total_rate and actual and scope == 'all' then adjusted(worker_bucket_key, limits.total_rate, limits.total_burst, false, nil) end
for _, limit in ipairs(shared) do
  if limit.rate then
    local bucket_key = limit.key_bucket_prefix .. throttle_key
    local tokens = adjusted(bucket_key, limit.rate, limit.burst, true, TAKEN_PREFIX .. limit.name)
    local ttl_ms = math.ceil((limit.burst - tokens) * 1000 / limit.rate) + 1000
    if retry_after_ms >= 0 then
      local until_ms = now + retry_after_ms
      local previous = tonumber(redis.call('HGET', bucket_key, 'paused_until_ms'))
      if previous == nil or previous < until_ms then redis.call('HSET', bucket_key, 'paused_until_ms', until_ms) end
      ttl_ms = math.max(ttl_ms, until_ms - now + 1000)
    end
    redis.call('PEXPIRE', bucket_key, ttl_ms)
    redis.call('PEXPIRE', bucket_key .. REPORTED_SUFFIX, ttl_ms)
  end
  if limit.total_rate and actual then
    local tokens = adjusted(limit.bucket_key, limit.total_rate, limit.total_burst, false, nil)
    redis.call('PEXPIRE', limit.bucket_key, math.ceil((limit.total_burst - tokens) * 1000 / limit.total_rate) + 1000)
  end
end
return 'applied'
