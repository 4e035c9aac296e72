-- Record a failed attempt of an activity exactly once (a retry is due, or the activity
-- is paused in the dead-letter queue); any worker may call it, no lease needed.
-- KEYS: meta, log, steps, attempts, claim
-- ARGV: seq, attempt, event_json, worker_id
-- Returns {'ok', entry_id, owner, lease_until} | {'done'} (the step has its outcome)
-- | {'dup'} (this attempt was recorded already) | {'late'} (the run ended) | {'missing'}
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
if not m[1] then return {'missing'} end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {'done'} end
if m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled' then return {'late'} end
local attempt = tonumber(ARGV[2])
if (tonumber(redis.call('HGET', KEYS[4], ARGV[1])) or 0) >= attempt then return {'dup'} end
redis.call('HSET', KEYS[4], ARGV[1], attempt)
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
if redis.call('GET', KEYS[5]) == ARGV[4] then redis.call('DEL', KEYS[5]) end
return {'ok', id, m[2], m[3]}
