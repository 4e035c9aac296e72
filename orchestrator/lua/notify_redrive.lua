-- An operator's hand on a dead delivery: 'redrive' tries it again now, with fresh
-- attempts; 'discard' forgets it.
-- KEYS: due, dead, delivery
-- ARGV: id, action, now_ms
-- Returns 1 done, 0 not a dead delivery.
if redis.call('HGET', KEYS[3], 'status') ~= 'dead' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == 'discard' then
  redis.call('DEL', KEYS[3])
  return 1
end
redis.call('HSET', KEYS[3], 'status', 'pending', 'attempts', 0, 'updated_ms', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
