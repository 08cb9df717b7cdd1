#!lua flags=allow-oom
-- delete: delete finished jobs (an operator's delete: succeeded, dead or cancelled ones)
-- before their retention ends, as purge does after it.
-- KEYS: the queue's keys (WorkerKeys.queue_keys), finished zset (an earlier version's, see
--   retry.lua), operation hash (see retry.lua)
-- ARGV: the queue's args (WorkerKeys.queue_args), job key prefix, the states a job may be
--   in to be deleted (comma-separated), operation id ('' = none), mode: 'ids' (then the job
--   suffixes) or 'index' (then most: the first jobs of the first state's index)
-- Returns {now_ms, 0, then 2 per job looked at: suffix, outcome (deleted | missing | the
--   state it is in)}
--!include common
--!include jobs
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue = new_queue(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local finished_key, operation_key = KEYS[6], KEYS[7]
local job_prefix, states_text, operation, mode = ARGV[5], ARGV[6], ARGV[7], ARGV[8]

-- the ARGV after the fixed ones (9 on) are the job suffixes, or how many to take
local allowed, suffixes = bulk_targets(queue, states_text, mode, ARGV, 9, #ARGV)

local now = server_now_ms()
local out = {now, 0}
local deleted = 0
for _, suffix in ipairs(suffixes) do
  local job_key = job_prefix .. suffix
  local job = redis.call('HMGET', job_key, F.state, F.throttle_key, F.attempts)
  local state = job[1]
  out[#out + 1] = suffix
  if not state then
    out[#out + 1] = 'missing'
  elseif not allowed[state] then
    out[#out + 1] = state
  else
    redis.call('DEL', job_key, queue.history_prefix .. suffix)
    redis.call('ZREM', finished_key, suffix)
    moved(queue, suffix, job[2], state, 'deleted', 0, tonumber(job[3]) or 0)
    count(queue, state, -1)
    deleted = deleted + 1
    out[#out + 1] = 'deleted'
  end
end
if operation ~= '' then redis.call('HINCRBY', operation_key, 'done', deleted) end
write_counts(queue)
return out
