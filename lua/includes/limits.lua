-- A worker's live limits (see limits.py) and its token buckets.

-- A job's lease when neither the job nor the worker's limits hash gives a timeout (the
-- hash is seeded before the first claim, but a Redis that lost its data has none):
-- config.py's DEFAULT_TIMEOUT_S, which a test holds this to.
local DEFAULT_TIMEOUT_MS = 30000

-- The worker's live limits from its limits hash; a missing field is no limit.
local function read_limits(limits_key)
  local v = redis.call('HMGET', limits_key, 'rate', 'burst', 'concurrency', 'total_rate', 'total_burst',
    'timeout_ms', 'paused')
  local limits = {
    rate = tonumber(v[1]), burst = tonumber(v[2]), concurrency = tonumber(v[3]),
    total_rate = tonumber(v[4]), total_burst = tonumber(v[5]), timeout_ms = tonumber(v[6]),
    paused = v[7] == '1',
  }
  if limits.rate and not limits.burst then limits.burst = math.max(1, limits.rate) end
  if limits.total_rate and not limits.total_burst then limits.total_burst = math.max(1, limits.total_rate) end
  if not limits.rate then limits.burst = nil end
  if not limits.total_rate then limits.total_burst = nil end
  return limits
end

-- A token bucket's level now, from its stored level and when it was stored (nil = full).
local function bucket_level(stored_tokens, stored_ms, rate, burst, now)
  if stored_tokens == false or stored_tokens == nil then return burst end
  local elapsed_ms = math.max(0, now - tonumber(stored_ms))
  return math.min(burst, tonumber(stored_tokens) + elapsed_ms * rate / 1000)
end

-- Which bucket a job of this cost could never be claimed from under these limits, and
-- that bucket's size: 'burst' or 'total_burst' (limits.py words the refusal); nil when it can.
local function cost_refusal(limits, cost)
  if limits.burst and cost > limits.burst then return 'burst', limits.burst end
  if limits.total_burst and cost > limits.total_burst then return 'total_burst', limits.total_burst end
  return nil
end
