-- Delete the human tasks of deleted runs, decided or not: an open one also leaves the
-- open and SLA indexes and its assignee's count. Tasks that do not exist are skipped.
-- KEYS: open index, sla index, assignees, then one task key per task
-- ARGV: one task id per task key
-- Returns how many tasks were deleted.
local n = 0
for i = 4, #KEYS do
  local id = ARGV[i - 3]
  local text = redis.call('GET', KEYS[i])
  if text then
    if redis.call('ZREM', KEYS[1], id) == 1 then
      local ok, task = pcall(cjson.decode, text)
      local a = ok and type(task) == 'table' and task['assignee'] or ''
      if type(a) ~= 'string' then a = '' end
      if redis.call('HINCRBY', KEYS[3], a, -1) <= 0 then redis.call('HDEL', KEYS[3], a) end
    end
    redis.call('ZREM', KEYS[2], id)
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
