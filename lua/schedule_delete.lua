#!lua flags=allow-oom
-- schedule_delete: remove a schedule; the jobs its ticks created stay as they are.
-- KEYS[1] schedules zset, KEYS[2] schedule-ids set, KEYS[3] the schedule hash, KEYS[4] its jobs list
-- ARGV[1] suffix
-- Returns 1 when it existed, 0 when not.
--!include slot
local KEYS = keys_past_probes(KEYS)
local schedules_key, ids_key, schedule_key, jobs_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local suffix = ARGV[1]
local existed = redis.call('DEL', schedule_key)
redis.call('DEL', jobs_key)
redis.call('ZREM', schedules_key, suffix)
redis.call('SREM', ids_key, suffix)
return existed
