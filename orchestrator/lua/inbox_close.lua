-- Close a human task: keep it (decided, expired) but take it off the open and SLA indexes.
-- KEYS: task, open index, sla index; ARGV: task_id, task_json
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
