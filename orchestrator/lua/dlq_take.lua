-- Take a dead-letter entry out; only one caller gets it. With a task, the entry is
-- redriven: the task goes back on the queue in the same step, so it cannot be lost.
-- The same call sent again (the client library re-sends a call whose reply a dropped
-- connection lost) returns the entry it took: the taken key keeps its token and the
-- entry for a while.
-- KEYS: dlq index, entry key, queue stream, taken key
-- ARGV: entry_id, task field list as JSON ('' to purge), call token, taken TTL (s)
-- Returns the entry JSON, or false if there is none.
local entry = redis.call('GET', KEYS[2])
if not entry then
  local taken = redis.call('GET', KEYS[4])
  if taken then
    local cut = string.find(taken, '\n', 1, true)
    if cut and string.sub(taken, 1, cut - 1) == ARGV[3] then
      return string.sub(taken, cut + 1)
    end
  end
  return false
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[3], '*', unpack(cjson.decode(ARGV[2])))
end
redis.call('SET', KEYS[4], ARGV[3] .. '\n' .. entry, 'EX', tonumber(ARGV[4]))
return entry
