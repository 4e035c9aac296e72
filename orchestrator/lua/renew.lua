-- Extend this worker's lease, if it still holds it at this epoch.
-- KEYS: meta, log, steps
-- ARGV: worker_id, epoch, now_ms, ttl_ms, known_ids
-- Returns 1 renewed, 0 not ours any more, -1 the log lost one of known_ids (entries the
-- owner saw, space-separated; ID=SEQ: an outcome, checked in the steps hash, where its
-- script wrote it with the entry), so the owner's view is ahead of Redis: it must replay.
local m = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then return 0 end
local seqs, ids = {}, {}
for id in string.gmatch(ARGV[5], '%S+') do
  local entry, seq = string.match(id, '^([^=]+)=(.+)$')
  if entry then
    seqs[#seqs + 1], ids[#ids + 1] = seq, entry
  elseif #redis.call('XRANGE', KEYS[2], id, id) == 0 then
    return -1
  end
end
for from = 1, #seqs, 1000 do
  local held = redis.call('HMGET', KEYS[3], unpack(seqs, from, math.min(from + 999, #seqs)))
  for k = 1, #held do
    if held[k] ~= ids[from + k - 1] then return -1 end
  end
end
redis.call('HSET', KEYS[1], 'lease_until', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
