-- Move an open human task on once, as an SLA pass decides: mark an SLA point ("near":
-- most of the window has passed; "breached": the deadline has) or apply a reassignment
-- fallback. Moves its timer to the next point, for a reassignment its count to the new
-- assignee, and tells the notifiers, all in the same step. Refused when the task moved
-- on meanwhile: decided, a fallback applied, or (for a mark) marked by another worker.
-- KEYS: task, sla index, outbox, assignees
-- ARGV: task_id, fallback_used (expected), sla_state (expected; '*': any), task_json,
--       next point ms (0: none), event_json, outbox maxlen,
--       reassign ('1': move the count to the next argument's assignee), new assignee
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local task = cjson.decode(text)
local state = task['sla_state']
if type(state) ~= 'string' then state = '' end
if task['status'] ~= 'open' or tonumber(task['fallback_used']) ~= tonumber(ARGV[2])
    or (ARGV[3] ~= '*' and state ~= ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[4])
if tonumber(ARGV[5]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[8] == '1' then
  local old = task['assignee']
  if type(old) ~= 'string' then old = '' end
  if redis.call('HINCRBY', KEYS[4], old, -1) <= 0 then redis.call('HDEL', KEYS[4], old) end
  redis.call('HINCRBY', KEYS[4], ARGV[9], 1)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[6])
return 1
