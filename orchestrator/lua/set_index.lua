-- Move a run to one status index and out of every other.
-- KEYS: the target status index, then every other status index
-- ARGV: run_id, score_ms
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
