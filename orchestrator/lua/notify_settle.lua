-- Record how one try of a delivery went.
-- 'ok': delivered, whoever tried it (a 2xx is a 2xx); the record is kept for keep_ms so
-- the delivery is never made again, without its event.
-- 'fail': counted only from the holder of the current lease (a notifier that overran
-- its lease reports nothing); the delivery is due again at next_ms, or dead once it has
-- failed max_attempts times.
-- KEYS: due, dead, delivery
-- ARGV: id, outcome, lease, now_ms, keep_ms (ok) or next_ms (fail), max_attempts, error
-- Returns 1 delivered, 2 to be retried, 3 dead, 0 nothing done (settled or stale).
if redis.call('HGET', KEYS[3], 'status') ~= 'pending' then return 0 end
if ARGV[2] == 'ok' then
  redis.call('HSET', KEYS[3], 'status', 'delivered', 'updated_ms', ARGV[4])
  redis.call('HDEL', KEYS[3], 'event')
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return 1
end
if redis.call('HGET', KEYS[3], 'lease') ~= ARGV[3] then return 0 end
local failed = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('HSET', KEYS[3], 'last_error', ARGV[7], 'updated_ms', ARGV[4])
if failed >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[3], 'status', 'dead')
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  return 3
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
return 2
