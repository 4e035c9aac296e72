-- Put a human task in the inbox, unless it is there already; count it for its assignee
-- and tell the notifiers ("opened") in the same step, so the event is never lost and
-- never sent for a task that was not opened.
-- KEYS: task, open index, sla index, outbox, assignees
-- ARGV: task_id, task_json, created_ms, sla point ms (0: none), event_json,
--       outbox maxlen, assignee ('' for none)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5])
return 1
