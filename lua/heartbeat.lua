#!lua flags=allow-oom
-- heartbeat: a worker still at work on an attempt extends its lease to now + the attempt's
-- timeout (the one claim gave it: the job's own, else the worker's live timeout then).
-- KEYS[1] running zset, KEYS[2] job hash
-- ARGV[1] job suffix, ARGV[2] attempt (from the receipt token), ARGV[3] seq (0 = not checked)
-- Returns {outcome, lease_deadline_ms or the job's state}: outcome is extended (with the new
-- deadline), stale (the attempt is no longer the running one), finished (the job is not
-- running: its state is given) or missing.
-- The poller reaps by the running zset's scores, so moving the score keeps the attempt alive.
--!include common
--!include limits
--!include slot
local KEYS = keys_past_probes(KEYS)
local running_key, job_key = KEYS[1], KEYS[2]
local suffix, attempt, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local job = redis.call('HMGET', job_key, F.state, F.attempts, F.lease_timeout_ms, F.seq, F.lease_deadline_ms, F.timeout_ms)
local state = job[1]
if not state then return {'missing', ''} end
if seq ~= 0 and seq ~= tonumber(job[4]) then return {'stale', state} end  -- an earlier job with this id
if tonumber(job[2]) ~= attempt then return {'stale', state} end
if state ~= 'running' then return {'finished', state} end
local now = server_now_ms()
-- A job claimed before claim kept lease_timeout_ms has its own timeout_ms (or the default).
local timeout_ms = tonumber(job[3]) or tonumber(job[6]) or DEFAULT_TIMEOUT_MS
local lease_deadline_ms = math.max(now + timeout_ms, tonumber(job[5]) or 0)
redis.call('HSET', job_key, F.lease_deadline_ms, lease_deadline_ms)
redis.call('ZADD', running_key, lease_deadline_ms, suffix)
return {'extended', lease_deadline_ms}
