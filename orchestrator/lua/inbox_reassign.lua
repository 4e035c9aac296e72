-- Apply a reassignment fallback once: only if the task is open and no other worker has
-- applied fallback number ARGV[2] yet.
-- KEYS: task, sla index; ARGV: task_id, fallback_used (expected), task_json, sla_due_ms (0: none)
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local task = cjson.decode(text)
if task['status'] ~= 'open' or tonumber(task['fallback_used']) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
