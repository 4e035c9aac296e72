-- Record step outcomes of one run exactly once each; any worker may call it, no lease
-- needed (the steps hash, not the owner, decides what counts).
-- KEYS: meta, log, steps, attempts
-- ARGV: worker_id, then per item: seq, attempt, event_json
-- The step's claim is left to lapse (it has a TTL of a lease): once the steps hash holds
-- the outcome, whoever would start the step again is told 'done' (start.lua,
-- append.lua) before any claim is looked at.
-- An outcome of an attempt that was already recorded as failed (given up as hung, say)
-- is stale: dropped like a duplicate.
-- Returns one reply per item: {'ok', entry_id, owner, lease_until} | {'dup'} | {'late'}
-- | {'missing'}
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until')
local out = {}
local n = (#ARGV - 1) / 3
if not m[1] then
  for k = 1, n do out[k] = {'missing'} end
  return out
end
local ended = m[1] == 'completed' or m[1] == 'failed' or m[1] == 'cancelled'
-- What is recorded already, and the attempts given up: one HMGET each for all items.
local seqs = {}
for k = 1, n do seqs[k] = ARGV[3 * k - 1] end
local recorded = hmget(KEYS[3], seqs)
local given_up = hmget(KEYS[4], seqs)
local done, written = {}, {}
local dups, late = 0, 0
for k = 1, n do
  local seq, attempt, event = seqs[k], tonumber(ARGV[3 * k]), ARGV[3 * k + 1]
  if recorded[k] or done[seq] or (attempt > 0 and (tonumber(given_up[k]) or 0) >= attempt) then
    dups = dups + 1
    out[k] = {'dup'}
  elseif ended then
    late = late + 1
    out[k] = {'late'}
  else
    local id = redis.call('XADD', KEYS[2], '*', 'e', event)
    done[seq] = true
    written[#written + 1] = seq
    written[#written + 1] = id
    out[k] = {'ok', id, m[2], m[3]}
  end
end
if #written > 0 then hset_chunks(KEYS[3], written) end
if dups > 0 then redis.call('HINCRBY', KEYS[1], 'dups', dups) end
if late > 0 then redis.call('HINCRBY', KEYS[1], 'late', late) end
return out
