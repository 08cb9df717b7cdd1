#!lua flags=allow-oom
-- migrate_fields: rename the fields of job hashes that an earlier layout wrote under their
-- long names (state, args, run_at_ms, ...; a shared limit's taken:NAME) to the names stored
-- now (F, lua/includes/fields.lua: s, a, r, ...; x:NAME). A hash already renamed, or gone,
-- is left as it is, so a repeat (or another coordinator's pass) changes nothing more.
-- (allow-oom: a renamed hash is smaller than it was.)
-- KEYS: job hashes
-- Returns how many hashes it renamed.
--!include common
--!include slot
local KEYS = keys_past_probes(KEYS)
local OLD_TAKEN_PREFIX = 'taken:'
local renamed = 0
for i = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  local old_names, new_fields = {}, {}
  for j = 1, #flat, 2 do
    local name = flat[j]
    local stored = F[name]
    if stored == nil and string.sub(name, 1, #OLD_TAKEN_PREFIX) == OLD_TAKEN_PREFIX then
      stored = TAKEN_PREFIX .. string.sub(name, #OLD_TAKEN_PREFIX + 1)
    end
    if stored ~= nil then
      old_names[#old_names + 1] = name
      new_fields[#new_fields + 1] = stored
      new_fields[#new_fields + 1] = flat[j + 1]
    end
  end
  if #old_names > 0 then
    redis.call('HDEL', KEYS[i], unpack(old_names))
    redis.call('HSET', KEYS[i], unpack(new_fields))
    renamed = renamed + 1
  end
end
return renamed
