-- Create a run, or find the existing one for a caller-chosen run id.
-- KEYS: meta, log
-- ARGV: run_id, workflow, input_json, input_hash, now_ms, parent_json, event_json,
--       deadline_ms (0: none), traceparent ('': untraced), trace_parent (its parent span)
if redis.call('EXISTS', KEYS[1]) == 1 then
  local found = redis.call('HMGET', KEYS[1], 'workflow', 'input_hash', 'status')
  if found[1] ~= ARGV[2] or found[2] ~= ARGV[4] then
    return {'conflict', found[1]}
  end
  return {'exists', found[3]}
end
redis.call('HSET', KEYS[1],
  'run_id', ARGV[1], 'workflow', ARGV[2], 'input', ARGV[3], 'input_hash', ARGV[4],
  'status', 'pending', 'created_ms', ARGV[5], 'updated_ms', ARGV[5],
  'epoch', 0, 'owner', '', 'lease_until', 0, 'parent', ARGV[6], 'dups', 0,
  'deadline_ms', ARGV[8])
if ARGV[9] and ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'traceparent', ARGV[9], 'trace_parent', ARGV[10])
end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[7])
return {'created', 'pending'}
