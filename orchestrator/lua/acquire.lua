-- Take the lease on a run: a new epoch (fencing token) for this worker.
-- KEYS: meta
-- ARGV: worker_id, now_ms, ttl_ms
local m = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until', 'epoch')
local status, owner, lease, epoch = m[1], m[2], tonumber(m[3]), tonumber(m[4])
if not status then return {'missing'} end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {'terminal', status}
end
local now = tonumber(ARGV[2])
if owner ~= '' and owner ~= ARGV[1] and lease > now then
  return {'held', owner}
end
epoch = epoch + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[3]),
  'epoch', epoch, 'status', 'running', 'updated_ms', ARGV[2])
return {'acquired', tostring(epoch), status}
