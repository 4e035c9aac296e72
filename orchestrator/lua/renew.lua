-- Extend this worker's lease, if it still holds it at this epoch.
-- KEYS: meta
-- ARGV: worker_id, epoch, now_ms, ttl_ms
local m = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
