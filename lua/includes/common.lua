-- Shared by every script: the one clock (the Redis server's), the queue member format,
-- calls in slices, and the names of a job's fields (F, from fields.lua).
--!include fields
local function server_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The dispatched hash (claim.lua writes it, worker_state.lua reads it) keeps the jobs
-- claimed in each second of the last DISPATCHED_RING_S: field second % DISPATCHED_RING_S,
-- value '<unix second>:<jobs claimed>', a field reused once its second is that old.
local DISPATCHED_RING_S = 300

-- A member of a queue zset: the 12-hex-digit enqueue sequence, then the job suffix,
-- so that jobs due at the same millisecond leave in the order they were enqueued.
local QUEUE_SEQ_DIGITS = 12
local function queue_member(seq, suffix)
  return string.format('%012x', tonumber(seq)) .. suffix
end
local function suffix_of_member(member)
  return string.sub(member, QUEUE_SEQ_DIGITS + 1)
end

-- redis.call(command, key, ...) with the values of `flat` as its arguments, `per` values
-- (one member) at a time: in slices, since Lua's unpack fails beyond a few thousand values.
local SLICE_MEMBERS = 1000
local function call_in_slices(command, key, flat, per)
  local slice = SLICE_MEMBERS * per
  for first = 1, #flat, slice do
    redis.call(command, key, unpack(flat, first, math.min(#flat, first + slice - 1)))
  end
end

-- A tagged call (a claim) keeps its answer under its reply key for a while, so
-- that a repeat of the call whose answer was lost (a timeout, a dropped connection)
-- returns the first answer instead of running again. first_answer is nil when the call
-- has not run yet.
local function first_answer(reply_key)
  local stored = redis.call('GET', reply_key)
  if stored then return cjson.decode(stored) end
  return nil
end
local function keep_answer(reply_key, ttl_ms, answer)
  redis.call('SET', reply_key, cjson.encode(answer), 'PX', ttl_ms)
  return answer
end
