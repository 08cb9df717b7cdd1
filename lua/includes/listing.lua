-- Shared by the listings (list.lua, list_scheduled.lua).

-- The head of a listing's answer: the worker's counts queued, retrying, succeeded, dead,
-- cancelled (its stats hash) and running (its running zset), in that order
-- (engine/listings.py, listing_counts).
local function listing_counts(stats_key, running_key)
  local stats = redis.call('HMGET', stats_key, 'queued', 'retrying', 'succeeded', 'dead', 'cancelled')
  local out = {}
  for i = 1, 5 do out[i] = tonumber(stats[i]) or 0 end
  out[6] = redis.call('ZCARD', running_key)
  return out
end
