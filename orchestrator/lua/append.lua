-- The owner's fenced write: append events to the run's log, in order.
-- KEYS: meta, log, steps, last_write, ended, claim keys referenced by index...
-- ARGV: worker_id, epoch, now_ms, claim_ttl_ms, new_status, result_json, known_ids, n,
--       token, ended_ttl_ms, then n times: seq, mode, claim_key_index, event_json
-- A terminal status also adds one entry to the run's 'ended' stream (with a TTL):
-- waiters for the result block on it, not on the log, so they wake once.
-- token: unique per call. The client library sends a call again when the connection
-- drops before the reply (a server restart, say); if the first one ran, the same call
-- sent again returns the first reply unchanged instead of appending the events twice
-- (and finding its own claims taken: 'busy', so a step claimed to run here never ran).
-- known_ids: space-separated log entries the owner saw ('' : none; ID=SEQ: see below). If one is gone,
-- Redis lost writes (a crash before they reached its disk): refused with ROLLEDBACK,
-- so the owner replays what Redis holds instead of writing past the hole.
-- mode 'log'   plain event
--      'step'  an outcome the owner decides (timer fired, signal taken): first one wins
--      'sched' an activity scheduled; skipped when its outcome is already recorded;
--              with a claim key index, the owner claims it to run it itself
-- Returns one entry per event: the new entry id, 'done' (outcome already recorded),
-- 'busy' (another worker holds the claim), or 'dup'.
local last = redis.call('GET', KEYS[4])
if last and string.sub(last, 1, #ARGV[9] + 1) == ARGV[9] .. ' ' then
  local first = {}
  for res in string.gmatch(string.sub(last, #ARGV[9] + 2), '%S+') do
    first[#first + 1] = res
  end
  return first
end
local m = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'status')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then
  return redis.error_reply('STALE lease: run owned by ' .. tostring(m[1]) .. ' epoch ' .. tostring(m[2]))
end
if m[3] == 'completed' or m[3] == 'failed' or m[3] == 'cancelled' then
  return redis.error_reply('TERMINAL run is ' .. m[3])
end
-- known_ids: an entry ID is looked up in the log; ID=SEQ (an outcome, whose entry its
-- script wrote with the steps hash's SEQ field) in the steps hash, all in one HMGET.
local seqs, ids = {}, {}
for id in string.gmatch(ARGV[7], '%S+') do
  local entry, seq = string.match(id, '^([^=]+)=(.+)$')
  if entry then
    seqs[#seqs + 1], ids[#ids + 1] = seq, entry
  elseif #redis.call('XRANGE', KEYS[2], id, id) == 0 then
    return redis.error_reply('ROLLEDBACK log entry ' .. id .. ' is gone')
  end
end
if #seqs > 0 then
  local held = hmget(KEYS[3], seqs)
  for k = 1, #seqs do
    if held[k] ~= ids[k] then
      return redis.error_reply('ROLLEDBACK log entry ' .. ids[k] .. ' is gone')
    end
  end
end
local out = {}
local n = tonumber(ARGV[8])
-- Which steps already have an outcome: one HMGET for all of them.
local asked = {}
for k = 0, n - 1 do
  if ARGV[12 + 4 * k] ~= 'log' then asked[#asked + 1] = ARGV[11 + 4 * k] end
end
local recorded = {}
if #asked > 0 then
  local ids = hmget(KEYS[3], asked)
  for k = 1, #asked do
    if ids[k] then recorded[asked[k]] = true end
  end
end
local written = {}  -- steps decided here: one HSET for all, after the loop
local i = 11
for k = 1, n do
  local seq, mode, claim, event = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  if mode == 'log' then
    out[k] = redis.call('XADD', KEYS[2], '*', 'e', event)
  elseif recorded[seq] then
    out[k] = mode == 'sched' and 'done' or 'dup'
  elseif mode == 'step' then
    local id = redis.call('XADD', KEYS[2], '*', 'e', event)
    written[#written + 1] = seq
    written[#written + 1] = id
    recorded[seq] = true
    out[k] = id
  else
    local busy = false
    if claim > 0 then
      busy = not redis.call('SET', KEYS[claim], ARGV[1], 'NX', 'PX', ARGV[4])
    end
    local id = redis.call('XADD', KEYS[2], '*', 'e', event)
    out[k] = busy and 'busy' or id
  end
end
for from = 1, #written, 2000 do
  redis.call('HSET', KEYS[3], unpack(written, from, math.min(from + 1999, #written)))
end
redis.call('SET', KEYS[4], ARGV[9] .. ' ' .. table.concat(out, ' '))
if ARGV[5] ~= '' then
  if ARGV[5] ~= 'completed' and ARGV[5] ~= 'failed' and ARGV[5] ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'status', ARGV[5], 'updated_ms', ARGV[3])
  else
    redis.call('HSET', KEYS[1], 'status', ARGV[5], 'updated_ms', ARGV[3], 'result', ARGV[6],
      'owner', '', 'lease_until', 0)
    redis.call('XADD', KEYS[5], '*', 'status', ARGV[5])
    redis.call('PEXPIRE', KEYS[5], ARGV[10])
  end
end
return out
