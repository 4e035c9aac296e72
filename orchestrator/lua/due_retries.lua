-- Move due retries onto their queue, so whichever worker is free runs the next attempt.
-- KEYS: retries (sorted set of task field lists as JSON), queue stream
-- ARGV: now_ms, limit
-- Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', unpack(cjson.decode(member)))
  redis.call('ZREM', KEYS[1], member)
end
return #due
