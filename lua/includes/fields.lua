-- The fields of a job's hash, by the names the scripts use -> the names stored (short:
-- a listpack keeps every name beside its value, once per job). src/redisq/job_fields.py
-- is the Python side and says what each holds; tests/test_job_fields.py holds the two equal.
local F = {
  state = 's',
  args = 'a',
  run_at_ms = 'r',
  attempts = 'n',
  max_attempts = 'm',
  created_ms = 'c',
  seq = 'q',
  timeout_ms = 't',
  throttle_key = 'k',
  cost = 'w',
  schedule = 'cs',
  lease_deadline_ms = 'ld',
  lease_timeout_ms = 'lt',
  started_ms = 'b',
  sent_by = 'by',
  finished_ms = 'f',
  settled_attempt = 'sa',
  receipt_digest = 'rd',
  result = 'o',
  status = 'h',
  last_error = 'e',
  throttled = 'th',
  unsent = 'u',
  cost_reported = 'cr',
}
-- a job under a shared limit: what its claim took from the key's bucket, per limit name
local TAKEN_PREFIX = 'x:'
-- The keys of an attempt's entry in a job's history list (a JSON text per attempt, one list
-- per job: short for the same reason). job_fields.py's HISTORY_FIELDS is the Python side.
local H = {
  attempt = 'n',
  started_ms = 'b',
  ended_ms = 'e',
  outcome = 'o',
  sent_by = 'by',
  status = 'h',
  error = 'x',
}
