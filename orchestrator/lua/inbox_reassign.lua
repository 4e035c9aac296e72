-- Apply a reassignment fallback once: only if the task is open and no other worker has
-- applied fallback number ARGV[2] yet. Moves the task's count to its new assignee and
-- tells the notifiers ("reassigned") in the same step.
-- KEYS: task, sla index, outbox, assignees
-- ARGV: task_id, fallback_used (expected), task_json, sla point ms (0: none), event_json,
--       outbox maxlen, new assignee ('' for none)
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
local old = task['assignee']
if type(old) ~= 'string' then old = '' end
if redis.call('HINCRBY', KEYS[4], old, -1) <= 0 then redis.call('HDEL', KEYS[4], old) end
redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
return 1
