-- Mark an SLA point of an open human task once: "near" (most of the window has passed)
-- or "breached" (the deadline has), move its timer to the next point, and tell the
-- notifiers in the same step. Refused when the task moved on meanwhile: decided,
-- reassigned, or marked by another worker.
-- KEYS: task, sla index, outbox
-- ARGV: task_id, fallback_used (expected), sla_state (expected), task_json,
--       next point ms (0: none), event_json, outbox maxlen
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local task = cjson.decode(text)
local state = task['sla_state']
if type(state) ~= 'string' then state = '' end
if task['status'] ~= 'open' or tonumber(task['fallback_used']) ~= tonumber(ARGV[2])
    or state ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[4])
if tonumber(ARGV[5]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'e', ARGV[6])
return 1
