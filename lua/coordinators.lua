-- coordinators: the coordinators alive now (their time has not run out). Changes nothing.
-- KEYS: coordinators zset
-- Returns {now_ms, per coordinator: its description, ms after which it counts as gone}
--!include common
local coordinators_key = KEYS[1]
local now = server_now_ms()
local out = {now}
local alive = redis.call('ZRANGEBYSCORE', coordinators_key, '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #alive do out[#out + 1] = alive[i] end
return out
