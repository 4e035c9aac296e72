-- Move due timers onto the run queue, so whichever worker is free resumes the run.
-- KEYS: timers, runq
-- ARGV: now_ms, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, run_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], run_id)
  redis.call('XADD', KEYS[2], '*', 'run', run_id, 'why', 'timer')
end
return #due
