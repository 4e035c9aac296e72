-- Take a dead-letter entry out; only one caller gets it. With a task, the entry is
-- redriven: the task goes back on the queue in the same step, so it cannot be lost.
-- KEYS: dlq index, entry key, queue stream
-- ARGV: entry_id, task field list as JSON ('' to purge)
-- Returns the entry JSON, or false if there is none.
local entry = redis.call('GET', KEYS[2])
if not entry then return false end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[3], '*', unpack(cjson.decode(ARGV[2])))
end
return entry
