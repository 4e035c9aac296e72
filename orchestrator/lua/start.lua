-- Claim activities of one run before running them, so two copies never run side by side.
-- KEYS: meta, steps, then one claim key per item
-- ARGV: worker_id, ttl_ms, then one seq per item
-- Returns one reply per item: 'ok' (claimed), 'done' (already recorded, or the run
-- ended or is gone: nothing to run) or 'busy' (another worker runs it).
local out = {}
local status = redis.call('HGET', KEYS[1], 'status')
local over = (not status) or status == 'completed' or status == 'failed' or status == 'cancelled'
for k = 1, #KEYS - 2 do
  local seq, claim = ARGV[k + 2], KEYS[k + 2]
  if over or redis.call('HEXISTS', KEYS[2], seq) == 1 then
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
