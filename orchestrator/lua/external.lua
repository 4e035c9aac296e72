-- An event from outside the run (signal, cancel request): append it, say who to wake.
-- KEYS: meta, log, sent (request id -> log entry)
-- ARGV: event_json, flag ('cancel': also mark the run, so workers stop its activities),
--       request_id
-- A request id seen before (the client library sent the call again after a lost reply,
-- or the caller retried with the same id) appends nothing: the first entry is returned.
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
if not m[1] then return {'missing'} end
local first = redis.call('HGET', KEYS[3], ARGV[3])
if first then return {'ok', first, m[2], m[3]} end
if m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled' then
  return {'terminal', m[1]}
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], id)
if ARGV[2] == 'cancel' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return {'ok', id, m[2], m[3]}
