-- Lease due deliveries to the caller: each one's due time moves to the end of the lease,
-- so another notifier tries it only if this one dies (or overruns the lease).
-- KEYS: due, delivery_1 .. delivery_n
-- ARGV: now_ms, lease_until_ms, id_1 .. id_n
-- Returns, per delivery taken: {id, lease, attempts, endpoint, event_json}.
local taken = {}
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= tonumber(ARGV[1]) then
    if redis.call('HGET', KEYS[i], 'status') == 'pending' then
      local lease = redis.call('HINCRBY', KEYS[i], 'lease', 1)
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      local f = redis.call('HMGET', KEYS[i], 'attempts', 'endpoint', 'event')
      taken[#taken + 1] = {id, lease, f[1], f[2], f[3]}
    else
      redis.call('ZREM', KEYS[1], id)  -- settled or gone: nothing to try
    end
  end
end
return taken
