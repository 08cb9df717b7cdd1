-- Limits that several workers share ([limits.NAME], see limits.py): each is a limits hash
-- as a worker's (rate, burst, concurrency, total_rate, total_burst, paused), per-key buckets
-- that every worker naming it draws on, a bucket over all keys, the attempts in flight
-- under it, the keys an operator paused, and per key whose turn it is.
--!include fields
--!include limits

-- Per limit, claim is given these KEYS and ARGV after its own (LimitKeys.claim_keys, claim_args).
local SHARED_KEYS = 4
local SHARED_ARGS = 3

-- How long the worker whose turn it is for a key may leave the key's tokens untaken before
-- the turn passes on (its coordinators are gone, or its jobs wait for something else).
local TURN_GRACE_MS = 250

-- The `count` shared limits given from keys[first_key] and args[first_arg] on.
local function read_shared_limits(keys, first_key, args, first_arg, count)
  local shared = {}
  for n = 0, count - 1 do
    local k, a = first_key + n * SHARED_KEYS, first_arg + n * SHARED_ARGS
    local limit = read_limits(keys[k])
    limit.bucket_key, limit.running_key, limit.paused_keys_key = keys[k + 1], keys[k + 2], keys[k + 3]
    limit.name, limit.key_bucket_prefix, limit.turns_prefix = args[a], args[a + 1], args[a + 2]
    shared[#shared + 1] = limit
  end
  return shared
end

-- The attempts in flight under a limit with a concurrency cap: its running zset holds the
-- job key of each attempt it let go (scored by the attempt); those that ended since
-- (settled, reaped, cancelled: the job is no longer running that attempt) leave it here,
-- so no script that ends an attempt needs to know the limits.
local function shared_in_flight(limit)
  local entries = redis.call('ZRANGE', limit.running_key, 0, -1, 'WITHSCORES')
  local ended = {}
  for i = 1, #entries, 2 do
    local job = redis.call('HMGET', entries[i], F.state, F.attempts)
    if job[1] ~= 'running' or tonumber(job[2]) ~= tonumber(entries[i + 1]) then ended[#ended + 1] = entries[i] end
  end
  call_in_slices('ZREM', limit.running_key, ended, 1)
  return #entries / 2 - #ended
end

-- Workers wait for a key's tokens in line: a worker that found the key's bucket short of
-- what its job needs joins it (at the back), and while anyone waits, the tokens go to the
-- front of the line first, so one worker's backlog cannot starve another's jobs of that
-- key. A turn left unused for TURN_GRACE_MS passes on (its coordinators are gone, or its
-- jobs wait for something else). Returns true when `worker` may take them now, else the
-- ms to look again.
local function join_line(limit, throttle_key, worker, now)
  redis.call('ZADD', limit.turns_prefix .. throttle_key, 'NX', now, worker)
end

local function my_turn(limit, throttle_key, worker, now)
  local turns_key = limit.turns_prefix .. throttle_key
  local bucket_key = limit.key_bucket_prefix .. throttle_key
  while true do
    local front = redis.call('ZRANGE', turns_key, 0, 0)[1]
    if not front or front == worker then return true end
    join_line(limit, throttle_key, worker, now)
    -- Looked at again when the next token comes, or when the turn passes on.
    local again_ms = math.min(TURN_GRACE_MS, math.max(1, math.ceil(1000 / limit.rate)))
    local turn = redis.call('HMGET', bucket_key, 'turn_of', 'turn_since_ms')
    if turn[1] ~= front then
      redis.call('HSET', bucket_key, 'turn_of', front, 'turn_since_ms', now)
      return now + again_ms
    end
    local since = tonumber(turn[2])
    if now - since < TURN_GRACE_MS then return math.min(since + TURN_GRACE_MS, now + again_ms) end
    redis.call('ZREM', turns_key, front)  -- it joins again, at the back, when it lacks tokens
    redis.call('HDEL', bucket_key, 'turn_of', 'turn_since_ms')
  end
end

-- The worker took the key's tokens: it leaves the line (it joins again when it lacks some).
local function turn_taken(limit, throttle_key, worker)
  redis.call('ZREM', limit.turns_prefix .. throttle_key, worker)
  local bucket_key = limit.key_bucket_prefix .. throttle_key
  if redis.call('HGET', bucket_key, 'turn_of') == worker then
    redis.call('HDEL', bucket_key, 'turn_of', 'turn_since_ms')
  end
end

-- The worker has no job of the key waiting any more: it leaves the line.
local function turn_left(limit, throttle_key, worker)
  turn_taken(limit, throttle_key, worker)
end
