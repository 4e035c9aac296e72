-- An event from outside the run (signal, cancel request): append it, say who to wake.
-- KEYS: meta, log
-- ARGV: event_json, flag ('cancel': also mark the run, so workers stop its activities)
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
if not m[1] then return {'missing'} end
if m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled' then
  return {'terminal', m[1]}
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
if ARGV[2] == 'cancel' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return {'ok', id, m[2], m[3]}
