-- Record step outcomes of one run exactly once each; any worker may call it, no lease
-- needed (the steps hash, not the owner, decides what counts).
-- KEYS: meta, log, steps, then one claim key per item
-- ARGV: worker_id, then per item: seq, event_json
-- Returns one reply per item: {'ok', entry_id, owner, lease_until} | {'dup'} | {'late'}
-- | {'missing'}
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
local out = {}
local n = #KEYS - 3
if not m[1] then
  for k = 1, n do out[k] = {'missing'} end
  return out
end
local ended = m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled'
local dups, late = 0, 0
for k = 1, n do
  local seq, event = ARGV[2 * k], ARGV[2 * k + 1]
  if redis.call('HEXISTS', KEYS[3], seq) == 1 then
    dups = dups + 1
    out[k] = {'dup'}
  elseif ended then
    late = late + 1
    out[k] = {'late'}
  else
    local id = redis.call('XADD', KEYS[2], '*', 'e', event)
    redis.call('HSET', KEYS[3], seq, id)
    local claim = KEYS[3 + k]
    if redis.call('GET', claim) == ARGV[1] then redis.call('DEL', claim) end
    out[k] = {'ok', id, m[2], m[3]}
  end
end
if dups > 0 then redis.call('HINCRBY', KEYS[1], 'dups', dups) end
if late > 0 then redis.call('HINCRBY', KEYS[1], 'late', late) end
return out
