-- Redis Cluster moves a slot to another master one key at a time (MIGRATE). Meanwhile a
-- command in a script on a key of that slot that is not on this node fails (or, on the
-- node the slot moves to, finds nothing), and the writes the script made before it stay:
-- a claim could set a job running and lose it before its lease is written. So no script
-- runs while its worker's slot is moving: every call's first two KEYS are probes that
-- never exist (WorkerKeys.migration_probes), and Redis answers a call that names a key
-- missing from a moving slot with TRYAGAIN before the script starts, on either node. The
-- caller tries again (the engine maps what is left of TRYAGAIN to a 503); outside a
-- migration, and on one Redis, the probes cost nothing.

-- The call's KEYS without the two probes: what the script's header describes as KEYS.
local function keys_past_probes(keys)
  local rest = {}
  for i = 3, #keys do rest[i - 2] = keys[i] end
  return rest
end
