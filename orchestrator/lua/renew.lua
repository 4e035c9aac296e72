-- Extend this worker's lease, if it still holds it at this epoch.
-- KEYS: meta, log
-- ARGV: worker_id, epoch, now_ms, ttl_ms, known_ids
-- Returns 1 renewed, 0 not ours any more, -1 the log lost one of known_ids (entries the
-- owner saw, space-separated), so the owner's view is ahead of Redis: it must replay.
local m = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then return 0 end
for id in string.gmatch(ARGV[5], '%S+') do
  if #redis.call('XRANGE', KEYS[2], id, id) == 0 then return -1 end
end
redis.call('HSET', KEYS[1], 'lease_until', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
