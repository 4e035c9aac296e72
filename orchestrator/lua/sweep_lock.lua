-- Take or keep the retention sweep's lock: one worker deletes expired runs at a time.
-- KEYS: the lock
-- ARGV: worker id, ttl_ms
-- Returns 1 if this worker holds it (taken now or renewed), 0 if another one does.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
