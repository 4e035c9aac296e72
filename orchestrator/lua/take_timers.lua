-- Take the due timers of one timer partition (> 0) to fire them: the run queue is in
-- another hash slot, so they are fired outside this script. Each moves from the
-- partition's timers to its firing set, scored by when to fire it again should the
-- taker never say it did (drop_timers.lua); firing entries already past that time (a
-- taker died) are taken again. A timer set again meanwhile (ZADD LT) lands in the
-- timers, not here: it stays, whatever the taker does next.
-- KEYS: timers, firing
-- ARGV: now_ms, limit, again_ms
-- Returns the run ids taken (one may come twice: fired twice, harmless).
local limit = tonumber(ARGV[2])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, run_id in ipairs(out) do
  redis.call('ZADD', KEYS[2], ARGV[3], run_id)
end
if #out < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit - #out)
  for _, run_id in ipairs(due) do
    redis.call('ZREM', KEYS[1], run_id)
    redis.call('ZADD', KEYS[2], ARGV[3], run_id)
    out[#out + 1] = run_id
  end
end
return out
