-- lease: how long the running attempt's lease has left, for a dispatcher whose wait for the
-- worker's answer reached the attempt's timeout (heartbeats may have moved the lease on).
-- Reads only.
-- KEYS[1] running zset, KEYS[2] job hash
-- ARGV[1] job suffix, ARGV[2] attempt, ARGV[3] seq (0 = not checked)
-- Returns ms the lease has left (by the running zset's score, the one the poller reaps by),
-- or 0 when it has ended or the attempt is no longer the running one.
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local running_key, job_key = KEYS[1], KEYS[2]
local suffix, attempt, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local job = redis.call('HMGET', job_key, F.state, F.attempts, F.seq)
if job[1] ~= 'running' or tonumber(job[2]) ~= attempt then return 0 end
if seq ~= 0 and seq ~= tonumber(job[3]) then return 0 end  -- a later job with this id
local lease_deadline_ms = tonumber(redis.call('ZSCORE', running_key, suffix))
if not lease_deadline_ms then return 0 end
return math.max(0, lease_deadline_ms - server_now_ms())
