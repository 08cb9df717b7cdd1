#!lua flags=allow-oom
-- claim: move due jobs from their throttle keys' queues to running, as many as the limits
-- allow (each key's token bucket, the worker-wide bucket, the concurrency cap), each with
-- a lease that ends at now + its timeout. Keys whose time has come are served in turn:
-- a key that was just served goes behind the keys that are still waiting, so one busy
-- key cannot hold back the others.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), then running zset, worker bucket hash,
--   dispatched hash, buckets zset (throttle key -> when its bucket is full), this call's
--   reply key, the reply key of the loop's previous call (answered: deleted here), then per
--   shared limit the worker names its keys (LimitKeys.claim_keys)
-- ARGV: the queue's args (WorkerKeys.queue_args), then job key prefix, most jobs to claim,
--   how long to keep this call's answer (ms; 0 = not at all: the caller never repeats it),
--   the claiming coordinator's id (kept in the job as who sent the attempt), the worker's
--   name, then per shared limit its args (LimitKeys.claim_args)
-- A job goes only when the worker's own limits and every shared limit it names allow it,
-- all checked and taken here: with a throttle key, each shared limit's bucket of that key
-- (which every worker naming the limit draws on, in turn: lua/includes/shared.lua).
-- A claim that took jobs keeps its answer under its reply key: a repeat of the call (its
-- answer was lost) returns the same jobs, so a lost answer never costs an attempt.
-- Returns {wait_ms, capped, rated, total_slack_ms, shared_total_slacks, then 10 per claimed
--   job: suffix, attempt, timeout_ms, args, seq, throttle_key, cost, key_slack_ms, run_at_ms,
--   shared_key_slacks}
--   wait_ms  0: more jobs may be due now;  > 0: the next job or token is due in that many ms;
--           -1: nothing is scheduled;      -2: every concurrency slot is taken (look again after a settle);
--           -3: the worker is paused by an operator (look again after a resume).
--   capped   1 when the worker has a concurrency cap (a settle frees a slot: wake the claimers).
--   rated    1 when the worker has a rate or total_rate: its jobs must leave within the
--            coordinator's send_window of this claim, or be returned unsent (settle.lua),
--            and a late one holds its buckets back (hold_back.lua).
--   total_slack_ms, key_slack_ms  how long the worker-wide bucket and the job's key's bucket
--            would have taken to fill up when this claim drew on them ('' = no such bucket):
--            a job written later than that after the claim holds them back (hold_back.lua).
--   shared_total_slacks, shared_key_slacks  the same for each shared limit's bucket over all
--            keys and its bucket of the job's key, comma-separated in the order of the
--            shared limits given ('' for a limit without that bucket).
--!include common
--!include jobs
--!include limits
--!include shared
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local running_key, worker_bucket_key, dispatched_key, buckets_key = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local reply_key, answered_reply_key = KEYS[10], KEYS[11]
local job_prefix, most, reply_ttl_ms, claimer = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local worker_name = ARGV[9]
local shared = read_shared_limits(KEYS, 12, ARGV, 10, (#KEYS - 11) / SHARED_KEYS)
-- A key an operator paused in a shared limit is looked at again this late (a resume looks sooner).
local PAUSED_KEY_LOOK_MS = 3600000
if reply_ttl_ms > 0 then
  local first = first_answer(reply_key)
  if first then
    -- A repeat: the first call's jobs that are still leased to it go out now, with leases
    -- that start again now (its answer came late); the others (cancelled or reaped since)
    -- are left out.
    local now = server_now_ms()
    local out, leases = {first[1], first[2], first[3], first[4], first[5]}, {}
    for i = 6, #first, 10 do
      local suffix, attempt, timeout_ms = first[i], tonumber(first[i + 1]), tonumber(first[i + 2])
      local job = redis.call('HMGET', job_prefix .. suffix, F.state, F.attempts)
      if job[1] == 'running' and tonumber(job[2]) == attempt then
        redis.call('HSET', job_prefix .. suffix, F.lease_deadline_ms, now + timeout_ms)
        leases[#leases + 1] = now + timeout_ms
        leases[#leases + 1] = suffix
        for j = i, i + 9 do out[#out + 1] = first[j] end
      end
    end
    call_in_slices('ZADD', running_key, leases, 2)
    return out
  end
end
local limits = read_limits(queue.limits)
local capped, rated = 0, 0
if limits.concurrency then capped = 1 end
if limits.rate or limits.total_rate then rated = 1 end
for _, limit in ipairs(shared) do
  if limit.concurrency then capped = 1 end
  if limit.rate or limit.total_rate then rated = 1 end
end
local now = server_now_ms()
if limits.paused then return {-3, capped, rated, '', ''} end
for _, limit in ipairs(shared) do
  if limit.paused then return {-3, capped, rated, '', ''} end
end

-- A worker that answered 429 or 503 with Retry-After for a job without a throttle key.
local worker_bucket = redis.call('HMGET', worker_bucket_key, 'tokens', 'updated_ms', 'paused_until_ms')
local worker_paused_until = tonumber(worker_bucket[3])
if worker_paused_until and worker_paused_until > now then return {worker_paused_until - now, capped, rated, '', ''} end

local allowed = most
local free_slots = nil
if limits.concurrency then
  free_slots = limits.concurrency - redis.call('ZCARD', running_key)
  if free_slots <= 0 then return {-2, capped, rated, '', ''} end
  allowed = math.min(allowed, free_slots)
end
for _, limit in ipairs(shared) do
  if limit.concurrency then
    local free = limit.concurrency - shared_in_flight(limit)
    if free <= 0 then return {-2, capped, rated, '', ''} end
    allowed = math.min(allowed, free)
    free_slots = math.min(free_slots or free, free)
  end
  if limit.total_rate then
    local b = redis.call('HMGET', limit.bucket_key, 'tokens', 'updated_ms')
    limit.total_tokens = bucket_level(b[1], b[2], limit.total_rate, limit.total_burst, now)
  end
end
local shared_total_wait_ms = nil  -- how long a shared limit's bucket over all keys lacks tokens
local total_tokens = nil
if limits.total_rate then
  total_tokens = bucket_level(worker_bucket[1], worker_bucket[2], limits.total_rate, limits.total_burst, now)
end
local total_needed = nil  -- tokens the worker-wide bucket lacked for the next job

-- How long a bucket at `tokens` takes to fill up: lateness up to that costs it nothing.
local function slack_ms(tokens, rate, burst)
  return string.format('%.3f', math.max(0, burst - tokens) * 1000 / rate)
end

local out = {0, capped, rated, '', ''}
if total_tokens ~= nil then out[4] = slack_ms(total_tokens, limits.total_rate, limits.total_burst) end
local shared_total_slacks = {}
for n, limit in ipairs(shared) do
  shared_total_slacks[n] = ''
  if limit.total_tokens ~= nil then
    shared_total_slacks[n] = slack_ms(limit.total_tokens, limit.total_rate, limit.total_burst)
  end
end
out[5] = table.concat(shared_total_slacks, ',')
local claimed = 0

local leases = {}  -- ZADD arguments for the running zset: lease deadline, suffix, ...

local function take(job_key, suffix, job, timeout_ms, throttle_key, cost, key_slack_ms, run_at, shared_key_slacks)
  local attempt = (tonumber(job[6]) or 0) + 1
  local lease_deadline_ms = now + timeout_ms
  redis.call('HSET', job_key, F.state, 'running', F.attempts, attempt, F.lease_deadline_ms, lease_deadline_ms,
    F.lease_timeout_ms, timeout_ms, F.started_ms, now, F.sent_by, claimer)
  moved(queue, suffix, throttle_key, job[1], 'running', now, attempt)
  leases[#leases + 1] = lease_deadline_ms
  leases[#leases + 1] = suffix
  count(queue, 'queued', -1)
  if job[1] == 'retrying' then count(queue, 'retrying', -1) end
  out[#out + 1] = suffix
  out[#out + 1] = attempt
  out[#out + 1] = timeout_ms
  out[#out + 1] = job[4]
  out[#out + 1] = job[5]  -- the enqueue sequence: tells this job from a later one with its id
  out[#out + 1] = throttle_key
  out[#out + 1] = cost
  out[#out + 1] = key_slack_ms
  out[#out + 1] = run_at  -- when it was due: the dispatch's lag behind it is measured from here
  out[#out + 1] = shared_key_slacks
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
  for _, limit in ipairs(shared) do
    if redis.call('HEXISTS', limit.paused_keys_key, throttle_key) == 1 then
      if redis.call('ZCARD', queue_key) == 0 then return nil end
      return now + PAUSED_KEY_LOOK_MS
    end
  end
  for _, limit in ipairs(shared) do
    limit.tokens = nil
    if limit.rate then
      local b = redis.call('HMGET', limit.key_bucket_prefix .. throttle_key, 'tokens', 'updated_ms', 'taken',
        'paused_until_ms')
      -- Back-pressure that another worker's call met (report_cost.lua): the key waits for all.
      if tonumber(b[4]) and tonumber(b[4]) > now then
        if redis.call('ZCARD', queue_key) == 0 then return nil end
        return tonumber(b[4])
      end
      limit.tokens = bucket_level(b[1], b[2], limit.rate, limit.burst, now)
      limit.taken = tonumber(b[3]) or 0  -- tokens taken from it so far (see report_cost.lua)
    end
  end
  local tokens = nil
  if limits.rate then tokens = bucket_level(bucket[1], bucket[2], limits.rate, limits.burst, now) end
  local key_slack_ms = ''
  if tokens ~= nil then key_slack_ms = slack_ms(tokens, limits.rate, limits.burst) end
  local shared_key_slacks = {}
  for n, limit in ipairs(shared) do
    shared_key_slacks[n] = ''
    if limit.tokens ~= nil then shared_key_slacks[n] = slack_ms(limit.tokens, limit.rate, limit.burst) end
  end
  shared_key_slacks = table.concat(shared_key_slacks, ',')
  -- The first share + 1 jobs of the key, in order: what it may take, and the one after.
  local entries = redis.call('ZRANGE', queue_key, 0, share, 'WITHSCORES')
  local done = {}  -- members leaving the queue: taken, or with no hash left
  local taken = 0
  local next_ms = nil
  local stopped = false
  for i = 1, #entries, 2 do
    local member, run_at = entries[i], tonumber(entries[i + 1])
    if run_at > now then next_ms = run_at stopped = true break end
    local suffix = suffix_of_member(member)
    local job_key = job_prefix .. suffix
    local job = redis.call('HMGET', job_key, F.state, F.cost, F.timeout_ms, F.args, F.seq, F.attempts)
    if not job[1] then
      done[#done + 1] = member  -- its hash is gone: nothing to run
    else
      local cost = tonumber(job[2]) or 1
      if limits.burst then cost = math.min(cost, limits.burst) end  -- a burst lowered live
      if tokens ~= nil and tokens + 1e-9 < cost then
        next_ms = now + math.ceil((cost - tokens) * 1000 / limits.rate)
        stopped = true
        break
      end
      local shared_wait = nil  -- when the shared limits' buckets of the key have its tokens
      for _, limit in ipairs(shared) do
        local shared_cost = limit.tokens ~= nil and math.min(cost, limit.burst)
        if shared_cost and limit.tokens + 1e-9 < shared_cost then
          shared_wait = math.max(shared_wait or 0, now + math.ceil((shared_cost - limit.tokens) * 1000 / limit.rate))
          join_line(limit, throttle_key, worker_name, now)
        end
      end
      if shared_wait then next_ms = shared_wait stopped = true break end
      -- It could go now: but the key has had its share of this claim, or the claim is full.
      if taken >= share or claimed >= allowed then next_ms = now stopped = true break end
      if taken == 0 then  -- whose turn it is for the key's tokens, among the workers sharing them
        local turn_wait = nil
        for _, limit in ipairs(shared) do
          if limit.rate then
            local turn = my_turn(limit, throttle_key, worker_name, now)
            if turn ~= true then turn_wait = math.max(turn_wait or 0, turn) end
          end
        end
        if turn_wait then next_ms = turn_wait stopped = true break end
      end
      local shared_total_lacks = false
      for _, limit in ipairs(shared) do
        if limit.total_tokens ~= nil and limit.total_tokens + 1e-9 < math.min(cost, limit.total_burst) then
          local wait_ms = math.ceil((math.min(cost, limit.total_burst) - limit.total_tokens) * 1000 / limit.total_rate)
          shared_total_wait_ms = math.max(shared_total_wait_ms or 0, wait_ms)
          shared_total_lacks = true
        end
      end
      if shared_total_lacks then
        next_ms = false
        if taken > 0 then next_ms = now end
        stopped = true
        break
      end
      local total_cost = nil
      if total_tokens ~= nil then
        total_cost = math.min(cost, limits.total_burst)
        if total_tokens + 1e-9 < total_cost then
          total_needed = total_cost - total_tokens
          next_ms = false
          if taken > 0 then next_ms = now end
          stopped = true
          break
        end
      end
      done[#done + 1] = member
      take(job_key, suffix, job, tonumber(job[3]) or limits.timeout_ms or DEFAULT_TIMEOUT_MS, throttle_key,
        tostring(cost), key_slack_ms, run_at, shared_key_slacks)
      taken = taken + 1
      if tokens ~= nil then tokens = tokens - cost end
      if total_cost ~= nil then total_tokens = total_tokens - total_cost end
      for _, limit in ipairs(shared) do
        if limit.tokens ~= nil then
          limit.tokens = limit.tokens - math.min(cost, limit.burst)
          limit.taken = limit.taken + math.min(cost, limit.burst)
          redis.call('HSET', job_key, TAKEN_PREFIX .. limit.name, string.format('%.6f', limit.taken))
        end
        if limit.total_tokens ~= nil then limit.total_tokens = limit.total_tokens - math.min(cost, limit.total_burst) end
        if limit.concurrency then redis.call('ZADD', limit.running_key, (tonumber(job[6]) or 0) + 1, job_key) end
      end
    end
  end
  call_in_slices('ZREM', queue_key, done, 1)
  if not stopped then
    -- Every job fetched left (some had no hash any more): look at what follows, if anything.
    local head = redis.call('ZRANGE', queue_key, 0, 0, 'WITHSCORES')
    if head[1] then
      next_ms = math.max(tonumber(head[2]), now)
      if tokens ~= nil and tokens + 1e-9 < 1 then next_ms = math.max(next_ms, now + math.ceil((1 - tokens) * 1000 / limits.rate)) end
      for _, limit in ipairs(shared) do
        if limit.tokens ~= nil and limit.tokens + 1e-9 < 1 then
          next_ms = math.max(next_ms, now + math.ceil((1 - limit.tokens) * 1000 / limit.rate))
        end
      end
    end
  end
  if taken > 0 then
    for _, limit in ipairs(shared) do
      if limit.tokens ~= nil then
        local shared_bucket_key = limit.key_bucket_prefix .. throttle_key
        redis.call('HSET', shared_bucket_key, 'tokens', string.format('%.6f', limit.tokens), 'updated_ms', now,
          'taken', string.format('%.6f', limit.taken))
        -- Untouched, it is full again by then: it may go (a missing bucket is full).
        redis.call('PEXPIRE', shared_bucket_key, math.ceil((limit.burst - limit.tokens) * 1000 / limit.rate) + 1000)
        turn_taken(limit, throttle_key, worker_name)
      end
    end
  end
  if tokens ~= nil and taken > 0 then
    redis.call('HSET', bucket_key, 'tokens', string.format('%.6f', tokens), 'updated_ms', now)
    redis.call('PERSIST', bucket_key)  -- a TTL an earlier release set must not end it early
    -- An untouched bucket refills to full; purge deletes it then (at the limits of then).
    redis.call('ZADD', buckets_key, now + math.ceil((limits.burst - tokens) * 1000 / limits.rate), throttle_key)
  end
  return next_ms
end

local ready = redis.call('ZRANGEBYSCORE', queue.throttle_keys, '-inf', now, 'LIMIT', 0, allowed)
local share = math.max(1, math.ceil(allowed / math.max(1, #ready)))
for _, throttle_key in ipairs(ready) do
  if claimed >= allowed or total_needed or shared_total_wait_ms then break end
  local next_ms = serve(throttle_key, share)
  if next_ms == nil then
    redis.call('ZREM', queue.throttle_keys, throttle_key)
    for _, limit in ipairs(shared) do
      if limit.rate then turn_left(limit, throttle_key, worker_name) end
    end
  elseif next_ms then
    redis.call('ZADD', queue.throttle_keys, next_ms, throttle_key)
  end
end

call_in_slices('ZADD', running_key, leases, 2)
write_counts(queue)
if total_tokens ~= nil and claimed > 0 then
  redis.call('HSET', worker_bucket_key, 'tokens', string.format('%.6f', total_tokens), 'updated_ms', now)
end
for _, limit in ipairs(shared) do
  if limit.total_tokens ~= nil and claimed > 0 then
    redis.call('HSET', limit.bucket_key, 'tokens', string.format('%.6f', limit.total_tokens), 'updated_ms', now)
    redis.call('PEXPIRE', limit.bucket_key,
      math.ceil((limit.total_burst - limit.total_tokens) * 1000 / limit.total_rate) + 1000)
  end
end
if claimed > 0 then
  -- Jobs claimed per second over the last minutes (DISPATCHED_RING_S).
  local second = math.floor(now / 1000)
  local slot = tostring(second % DISPATCHED_RING_S)
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
      if shared_total_wait_ms then wait_ms = math.max(wait_ms, shared_total_wait_ms) end
      out[1] = wait_ms
    end
  end
end
if answered_reply_key ~= reply_key then redis.call('DEL', answered_reply_key) end
if claimed > 0 and reply_ttl_ms > 0 then return keep_answer(reply_key, reply_ttl_ms, out) end
return out
