-- Record step outcomes of one run exactly once each; any worker may call it, no lease
-- needed (the steps hash, not the owner, decides what counts).
-- KEYS: meta, log, steps, attempts, then one claim key per item
-- ARGV: worker_id, then per item: seq, attempt, event_json
-- An outcome of an attempt that was already recorded as failed (given up as hung, say)
-- is stale: dropped like a duplicate.
-- Returns one reply per item: {'ok', entry_id, owner, lease_until} | {'dup'} | {'late'}
-- | {'missing'}
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
local out = {}
local n = #KEYS - 4
if not m[1] then
  for k = 1, n do out[k] = {'missing'} end
  return out
end
local ended = m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled'
local dups, late = 0, 0
for k = 1, n do
  local seq, attempt, event = ARGV[3 * k - 1], tonumber(ARGV[3 * k]), ARGV[3 * k + 1]
  if redis.call('HEXISTS', KEYS[3], seq) == 1
      or (attempt > 0 and (tonumber(redis.call('HGET', KEYS[4], seq)) or 0) >= attempt) then
    dups = dups + 1
    out[k] = {'dup'}
  elseif ended then
    late = late + 1
    out[k] = {'late'}
  else
    local id = redis.call('XADD', KEYS[2], '*', 'e', event)
    redis.call('HSET', KEYS[3], seq, id)
    local claim = KEYS[4 + k]
    if redis.call('GET', claim) == ARGV[1] then redis.call('DEL', claim) end
    out[k] = {'ok', id, m[2], m[3]}
  end
end
if dups > 0 then redis.call('HINCRBY', KEYS[1], 'dups', dups) end
if late > 0 then redis.call('HINCRBY', KEYS[1], 'late', late) end
return out
