#!lua flags=no-writes
-- list_scheduled: one page of a worker's scheduled jobs (or one throttle key's), soonest
-- first, read from where they wait instead of from an index of their own (which would
-- hold every waiting job a second time, 120 bytes each):
-- * a throttle key's listing reads the key's queue;
-- * the worker's listing merges two zsets scored by run_at_ms: the queue of the jobs that
--   have no throttle key, and the scheduled index, which holds the jobs that have one
--   (lua/includes/jobs.lua, moved()). At the same ms the queue's jobs come first.
-- A queue also holds retrying jobs, and an earlier version's index held every scheduled
-- job: entries of jobs that do not belong to the listing are skipped, at most `budget`
-- entries looked at per zset. A page cut short by that budget still says `more`, with a
-- cursor past what was looked at (the engine asks again).
-- A cursor is (source, member, score): 'q' (the queue) or 'i' (the index), the member
-- there, and its score then; the page starts after it whether or not it is still there.
-- KEYS: the queue, the scheduled index, the stats hash, the running zset
-- ARGV: job key prefix, with_index ('1': the worker's listing, merging the index;
--   '0': a throttle key's, the queue alone), most jobs, budget (entries looked at per
--   zset), cursor source ('' = from the start, 'q' or 'i'), cursor member, cursor score,
--   then the job fields to answer
-- Returns {counts: queued, retrying, succeeded, dead, cancelled, running; more (1 when
--   further jobs may follow); the next cursor's source, member, score ('' when none);
--   then per job: suffix, score, its fields' values (false = none)}
--!include common
--!include listing
--!include slot
local KEYS = keys_past_probes(KEYS)
local queue_key, index_key, stats_key, running_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix, with_index, most, budget = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local cursor_source, cursor_member, cursor_score = ARGV[5], ARGV[6], ARGV[7]
local read = {F.state, F.throttle_key}  -- what tells whether an entry belongs, then the fields answered
for i = 8, #ARGV do read[#read + 1] = ARGV[i] end
local SOURCE_ORDER = {q = 0, i = 1}  -- at the same score

-- The rank of the first entry of `key` after (score, member), whether or not member is
-- still there: past the entries of lower score, and of the entries at that score (Redis
-- orders them by member) those not after it, found by halving.
local function rank_after(key, score, member)
  local now_score = redis.call('ZSCORE', key, member)
  if now_score and tonumber(now_score) == tonumber(score) then return redis.call('ZRANK', key, member) + 1 end
  local low = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local high = redis.call('ZCOUNT', key, '-inf', score)
  while low < high do
    local middle = math.floor((low + high) / 2)
    if redis.call('ZRANGE', key, middle, middle)[1] <= member then low = middle + 1 else high = middle end
  end
  return low
end

-- Where a zset's part of the page starts.
local function first_rank(key, source)
  if cursor_source == '' then return 0 end
  if cursor_source == source then return rank_after(key, cursor_score, cursor_member) end
  if SOURCE_ORDER[source] < SOURCE_ORDER[cursor_source] then  -- its entries at the cursor's score came before
    return redis.call('ZCOUNT', key, '-inf', cursor_score)
  end
  return redis.call('ZCOUNT', key, '-inf', '(' .. cursor_score)
end

-- Up to most + 1 jobs of the listing from `key`, looking at `budget` entries at most.
-- Returns them and, when the budget ran out first, the last entry looked at (entries after
-- it are unseen).
local function scan(key, source)
  local found, looked, last = {}, 0, nil
  local rank = first_rank(key, source)
  while #found <= most do
    local want = math.min(most + 1 - #found, budget - looked)
    if want <= 0 then return found, last end
    local page = redis.call('ZRANGE', key, rank, rank + want - 1, 'WITHSCORES')
    for i = 1, #page, 2 do
      local member = page[i]
      local suffix = member
      if source == 'q' then suffix = suffix_of_member(member) end
      local values = redis.call('HMGET', job_prefix .. suffix, unpack(read))
      local keyed = values[2] and values[2] ~= ''
      -- the index's entries without a throttle key are an earlier version's, listed from the queue
      if values[1] == 'scheduled' and (source == 'q' or keyed) then
        found[#found + 1] = {source = source, member = member, suffix = suffix, score = tonumber(page[i + 1]),
                             score_text = page[i + 1], values = values}
      end
      last = {source = source, member = member, score = tonumber(page[i + 1]), score_text = page[i + 1]}
    end
    looked = looked + #page / 2
    rank = rank + #page / 2
    if #page / 2 < want then return found, nil end  -- the zset ends here
  end
  return found, nil
end

local function before(a, b)
  if a.score ~= b.score then return a.score < b.score end
  if a.source ~= b.source then return SOURCE_ORDER[a.source] < SOURCE_ORDER[b.source] end
  return a.member < b.member
end

local entries, stopped = scan(queue_key, 'q')
if with_index then
  local keyed, index_stopped = scan(index_key, 'i')
  for _, entry in ipairs(keyed) do entries[#entries + 1] = entry end
  if index_stopped and (stopped == nil or before(index_stopped, stopped)) then stopped = index_stopped end
end
table.sort(entries, before)

local page, more = {}, stopped ~= nil
for _, entry in ipairs(entries) do
  if stopped and before(stopped, entry) then break end  -- past what the budget let it see
  if #page == most then more = true; break end
  page[#page + 1] = entry
end
local cursor = nil
if more then
  if #page == most or stopped == nil then cursor = page[#page] else cursor = stopped end
end

local out = listing_counts(stats_key, running_key)
out[7] = more and 1 or 0
out[8], out[9], out[10] = '', '', ''
if cursor then out[8], out[9], out[10] = cursor.source, cursor.member, cursor.score_text end
for _, entry in ipairs(page) do
  out[#out + 1] = entry.suffix
  out[#out + 1] = entry.score_text
  for j = 3, #read do out[#out + 1] = entry.values[j] end
end
return out
