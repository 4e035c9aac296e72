-- Add (or replace) a dead-letter entry.
-- KEYS: dlq index, entry key; ARGV: entry_id, entry_json, now_ms
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
