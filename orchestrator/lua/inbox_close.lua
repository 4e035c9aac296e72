-- Close a human task: keep it (decided, expired) but take it off the open and SLA indexes.
-- Only the call that takes it off the open index counts the decision and tells the
-- notifiers, so a close healed again later reports nothing twice.
-- KEYS: task, open index, sla index, outbox, assignees, stats
-- ARGV: task_id, task_json, event_json, outbox maxlen, decision ('' for none),
--       latency bucket (its bound in seconds, or 'inf'), latency_ms
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local assignee = ''
if old then
  local a = cjson.decode(old)['assignee']
  if type(a) == 'string' then assignee = a end
end
if redis.call('HINCRBY', KEYS[5], assignee, -1) <= 0 then redis.call('HDEL', KEYS[5], assignee) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[6], 'decided:' .. ARGV[5], 1)
  redis.call('HINCRBY', KEYS[6], 'lat:' .. ARGV[6], 1)
  redis.call('HINCRBY', KEYS[6], 'lat_sum_ms', ARGV[7])
end
return 1
