-- Claim an activity before running it, so two copies never run side by side.
-- KEYS: steps, claim
-- ARGV: seq, worker_id, ttl_ms
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'done' end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 'busy' end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 'ok'
