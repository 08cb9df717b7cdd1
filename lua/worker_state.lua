-- worker_state: what GET /workers shows of one worker, read at one moment. Changes nothing.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then running, worker bucket, the bucket
--   of the key '' (jobs without a throttle key), dispatched
-- ARGV: the queue's args (WorkerKeys.queue_args)
-- Returns {now_ms, limits (HGETALL), stats (HGETALL), running, throttle keys waiting,
--   tokens of the key '' ('' = no rate), tokens of the worker-wide bucket ('' = none),
--   ms the worker stays paused by back-pressure (0 = not), jobs claimed in the last 60 s,
--   BUCKET_S, jobs claimed in each of the last HISTORY_BUCKETS spans of BUCKET_S whole seconds, oldest
--   first (the last span ends with the last whole second)}
--!include common
--!include jobs
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local running_key, worker_bucket_key, default_bucket_key, dispatched_key = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local now = server_now_ms()
local limits = read_limits(queue.limits)

local default_tokens = ''
if limits.rate then
  local b = redis.call('HMGET', default_bucket_key, 'tokens', 'updated_ms')
  default_tokens = string.format('%.3f', bucket_level(b[1], b[2], limits.rate, limits.burst, now))
end
local worker_bucket = redis.call('HMGET', worker_bucket_key, 'tokens', 'updated_ms', 'paused_until_ms')
local total_tokens = ''
if limits.total_rate then
  total_tokens = string.format('%.3f', bucket_level(worker_bucket[1], worker_bucket[2], limits.total_rate, limits.total_burst, now))
end
local paused_ms = math.max(0, (tonumber(worker_bucket[3]) or 0) - now)

local BUCKET_S = 10
local HISTORY_BUCKETS = DISPATCHED_RING_S / BUCKET_S
local second = math.floor(now / 1000)
local last_minute = 0
local history = {}
for i = 1, HISTORY_BUCKETS do history[i] = 0 end
local slots = redis.call('HVALS', dispatched_key)
for _, slot in ipairs(slots) do
  local at, seen = string.match(slot, '^(%d+):(%d+)$')
  at, seen = tonumber(at), tonumber(seen)
  if at and at > second - 60 then last_minute = last_minute + seen end
  local age_s = second - 1 - (at or 0)  -- 0: the last whole second (the current one is not over)
  if at and age_s >= 0 and age_s < DISPATCHED_RING_S then
    local bucket = HISTORY_BUCKETS - math.floor(age_s / BUCKET_S)
    history[bucket] = history[bucket] + seen
  end
end

return {now, redis.call('HGETALL', queue.limits), redis.call('HGETALL', queue.stats),
  redis.call('ZCARD', running_key), redis.call('ZCARD', queue.throttle_keys),
  default_tokens, total_tokens, paused_ms, last_minute, BUCKET_S, history}
