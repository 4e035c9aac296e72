-- Record a step's outcome exactly once; any worker may call it, no lease needed.
-- KEYS: meta, log, steps, claim
-- ARGV: seq, event_json, worker_id
-- Returns {'ok', entry_id, owner, lease_until} | {'dup'} | {'late'} | {'missing'}
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
if not m[1] then return {'missing'} end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'dups', 1)
  return {'dup'}
end
if m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled' then
  redis.call('HINCRBY', KEYS[1], 'late', 1)
  return {'late'}
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], id)
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
return {'ok', id, m[2], m[3]}
