-- Claim activities of one run before running them, so two copies never run side by side.
-- KEYS: steps, then one claim key per item
-- ARGV: worker_id, ttl_ms, then one seq per item
-- Returns one reply per item: 'ok' (claimed), 'done' (already recorded) or 'busy'.
local out = {}
for k = 1, #KEYS - 1 do
  local seq, claim = ARGV[k + 2], KEYS[k + 1]
  if redis.call('HEXISTS', KEYS[1], seq) == 1 then
    out[k] = 'done'
  else
    local holder = redis.call('GET', claim)
    if holder and holder ~= ARGV[1] then
      out[k] = 'busy'
    else
      redis.call('SET', claim, ARGV[1], 'PX', ARGV[2])
      out[k] = 'ok'
    end
  end
end
return out
