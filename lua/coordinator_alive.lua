-- coordinator_alive: a coordinator says it is alive (again, every few seconds), or that it
-- stops. The coordinators zset holds each one's description (a JSON text that does not
-- change while it runs) scored by the ms (Redis's clock) after which it counts as gone;
-- entries past theirs are removed here, by whichever coordinator comes next.
-- KEYS: coordinators zset
-- ARGV: the coordinator's description, 'alive' or 'gone', ms it counts as alive after this call
-- It grows memory, so Redis refuses it at maxmemory (as it does enqueue): while Redis is
-- full, the coordinators' entries run out and GET /coordinators lists fewer of them.
-- Returns the number of coordinators alive after the call.
--!include common
local coordinators_key = KEYS[1]
local description, mode, alive_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = server_now_ms()
redis.call('ZREMRANGEBYSCORE', coordinators_key, '-inf', now)
if mode == 'alive' then
  redis.call('ZADD', coordinators_key, now + alive_ms, description)
else
  redis.call('ZREM', coordinators_key, description)
end
return redis.call('ZCARD', coordinators_key)
