-- Put a human task in the inbox, unless it is there already.
-- KEYS: task, open index, sla index; ARGV: task_id, task_json, created_ms, sla_due_ms (0: none)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
return 1
