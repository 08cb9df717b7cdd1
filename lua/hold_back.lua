#!lua flags=allow-oom
-- hold_back: throttled jobs were written later than the claim that drew their tokens. Had
-- the claim been made when they were written, a bucket that was full (or nearly) at the
-- claim would have lost the refill of that time to its cap; take that refill back now, so
-- that the key's next calls leave no closer to the late ones than the tokens allow.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then the worker bucket hash, then per
--   shared limit the worker names its keys (LimitKeys.claim_keys)
-- ARGV: the queue's args (WorkerKeys.queue_args), then the reports (JSON: a list of
--   [bucket, limit, throttle key, slack_ms, cost, late_ms]), then per shared limit its args
--   (LimitKeys.claim_args). A report's bucket is 'key' (the worker's bucket of the throttle
--   key), 'worker' (the worker-wide one), 'limit-key' (the named shared limit's bucket of
--   the throttle key) or 'limit' (the shared limit's bucket over all keys); slack_ms is the
--   bucket's slack at the claim (claim.lua's key_slack_ms, total_slack_ms and their shared
--   lists: how long it would have taken to fill up), cost what the claim drew from it,
--   late_ms the lateness (ms after the claim) of the claim's first write on the bucket.
-- Returns the number of buckets held back.
-- A report carries what it needs, so reports of several claims of one key may come in any
-- order; a claim reports each bucket once (ClaimLateness in dispatch/claimer.py).
--!include common
--!include jobs
--!include limits
--!include shared
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local worker_bucket_key = KEYS[6]
local reports = cjson.decode(ARGV[5])
local shared_by_name = {}
for _, limit in ipairs(read_shared_limits(KEYS, 7, ARGV, 6, (#KEYS - 6) / SHARED_KEYS)) do
  shared_by_name[limit.name] = limit
end
local limits = read_limits(queue.limits)
local now = server_now_ms()

-- The refill a draw of `cost` loses to the bucket's cap when it is made `late_ms` later
-- than a claim that found the bucket `slack_ms` short of full.
local function lost_refill(slack_ms, cost, late_ms, rate)
  return math.min(cost, math.max(0, (late_ms - slack_ms) * rate / 1000))
end

-- Take `take` tokens from a bucket now; returns its new level.
local function take_tokens(bucket_key, take, rate, burst)
  local b = redis.call('HMGET', bucket_key, 'tokens', 'updated_ms')
  local tokens = bucket_level(b[1], b[2], rate, burst, now) - take
  redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
  return tokens
end

-- The same for a shared limit's bucket, which (as claim.lua leaves it) lives until it would
-- be full again: a missing bucket is full.
local function take_shared_tokens(bucket_key, take, rate, burst)
  local tokens = take_tokens(bucket_key, take, rate, burst)
  redis.call('PEXPIRE', bucket_key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
end

local held = 0
for _, report in ipairs(reports) do
  local kind, limit, throttle_key = report[1], shared_by_name[report[2]], report[3]
  local slack_ms, cost, late_ms = tonumber(report[4]), tonumber(report[5]), tonumber(report[6])
  if kind == 'key' and limits.rate then
    local take = lost_refill(slack_ms, cost, late_ms, limits.rate)
    if take > 0 then
      held = held + 1
      local tokens = take_tokens(queue.key_bucket_prefix .. throttle_key, take, limits.rate, limits.burst)
      -- A key waiting for its next token waits as much longer.
      local ready_ms = tonumber(redis.call('ZSCORE', queue.throttle_keys, throttle_key))
      if ready_ms ~= nil and tokens + 1e-9 < 1 then
        local next_token_ms = now + math.ceil((1 - tokens) * 1000 / limits.rate)
        if ready_ms < next_token_ms then redis.call('ZADD', queue.throttle_keys, next_token_ms, throttle_key) end
      end
    end
  elseif kind == 'worker' and limits.total_rate then
    local take = lost_refill(slack_ms, cost, late_ms, limits.total_rate)
    if take > 0 then
      held = held + 1
      take_tokens(worker_bucket_key, take, limits.total_rate, limits.total_burst)
    end
  elseif kind == 'limit-key' and limit and limit.rate then
    -- The other workers' claims of the key find it lower; none of them waits on a time
    -- set from its old level (claim.lua looks at a shared bucket's level every time).
    local take = lost_refill(slack_ms, cost, late_ms, limit.rate)
    if take > 0 then
      held = held + 1
      take_shared_tokens(limit.key_bucket_prefix .. throttle_key, take, limit.rate, limit.burst)
    end
  elseif kind == 'limit' and limit and limit.total_rate then
    local take = lost_refill(slack_ms, cost, late_ms, limit.total_rate)
    if take > 0 then
      held = held + 1
      take_shared_tokens(limit.bucket_key, take, limit.total_rate, limit.total_burst)
    end
  end
end
return held
