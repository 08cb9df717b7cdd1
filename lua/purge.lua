-- purge: delete finished jobs whose retention has passed, at most ARGV[2] per call.
-- KEYS[1] finished zset, KEYS[2] stats hash; ARGV[1] job key prefix, ARGV[2] most jobs to delete
-- Returns {purged, more (1 when further jobs are already due for purge)}
--!include common
local finished_key, stats_key = KEYS[1], KEYS[2]
local job_prefix, most = ARGV[1], tonumber(ARGV[2])
local now = server_now_ms()
local due = redis.call('ZRANGEBYSCORE', finished_key, '-inf', now, 'LIMIT', 0, most + 1)
local purged = 0
for i = 1, math.min(#due, most) do
  local job_key = job_prefix .. due[i]
  local state = redis.call('HGET', job_key, 'state')
  if state then redis.call('HINCRBY', stats_key, state, -1) end
  redis.call('DEL', job_key)
  redis.call('ZREM', finished_key, due[i])
  purged = purged + 1
end
local more = 0
if #due > most then more = 1 end
return {purged, more}
