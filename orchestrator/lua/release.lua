-- Give a run up (eviction, shutdown) unless events arrived that the owner has not seen.
-- KEYS: meta, log
-- ARGV: worker_id, epoch, last_seen_id, new_status, now_ms
local m = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'status')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if last[1] and last[1][1] ~= ARGV[3] then return -1 end
end
redis.call('HSET', KEYS[1], 'owner', '', 'lease_until', 0, 'status', ARGV[4],
  'updated_ms', ARGV[5])
return 1
