#!lua flags=no-writes
-- list: one page of a worker's jobs in one state (or one throttle key's), from the state's
-- index (keys.py: WorkerKeys.state_index; running jobs of the whole worker: the running
-- zset), in O(log n + page): the page starts after the cursor's member, found by its rank.
-- KEYS: the index, the stats hash, the running zset
-- ARGV: job key prefix, order ('asc' | 'desc'), most jobs, cursor member ('' = from the
--   start), cursor score (where the cursor's member was: used when it has left the index
--   since), then the job fields to answer
-- Returns {counts: queued, retrying, succeeded, dead, cancelled, running; more (1 when
--   further jobs follow), then per job: suffix, score, its fields' values (false = none)}
--!include listing
--!include slot
local KEYS = keys_past_probes(KEYS)
local index_key, stats_key, running_key = KEYS[1], KEYS[2], KEYS[3]
local job_prefix, order, most = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cursor_member, cursor_score = ARGV[4], ARGV[5]
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end

-- The rank (0-based, in the listing's order) of the first entry after the cursor.
local function first_rank()
  if cursor_member == '' then return 0 end
  local rank
  if order == 'desc' then rank = redis.call('ZREVRANK', index_key, cursor_member)
  else rank = redis.call('ZRANK', index_key, cursor_member) end
  if rank then return rank + 1 end
  -- The cursor's job has left the index: start at the entries that come after its score
  -- (ties with its score come after it when their member does).
  local before
  if order == 'desc' then before = redis.call('ZCOUNT', index_key, '(' .. cursor_score, '+inf')
  else before = redis.call('ZCOUNT', index_key, '-inf', '(' .. cursor_score) end
  local ties
  if order == 'desc' then ties = redis.call('ZRANGE', index_key, cursor_score, cursor_score, 'BYSCORE', 'REV')
  else ties = redis.call('ZRANGE', index_key, cursor_score, cursor_score, 'BYSCORE') end
  for _, member in ipairs(ties) do
    if (order == 'desc' and member < cursor_member) or (order ~= 'desc' and member > cursor_member) then break end
    before = before + 1
  end
  return before
end

local start = first_rank()
local page
if order == 'desc' then page = redis.call('ZRANGE', index_key, start, start + most, 'REV', 'WITHSCORES')
else page = redis.call('ZRANGE', index_key, start, start + most, 'WITHSCORES') end

local out = listing_counts(stats_key, running_key)
out[7] = 0
if #page > most * 2 then out[7] = 1 end
for i = 1, math.min(#page, most * 2), 2 do
  local suffix = page[i]
  out[#out + 1] = suffix
  out[#out + 1] = page[i + 1]
  local values = redis.call('HMGET', job_prefix .. suffix, unpack(fields))
  for j = 1, #fields do out[#out + 1] = values[j] end
end
return out
