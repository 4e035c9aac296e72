-- Turn one outbox event into durable deliveries, one per endpoint, and acknowledge it,
-- in one step. A notifier that dies before this leaves the event pending in the group
-- for another one; one that dies after leaves deliveries that come due when its lease
-- ends. A delivery that exists already (the event was taken before) is left alone.
-- KEYS: outbox, due, delivery_1 .. delivery_n
-- ARGV: group, entry_id, now_ms, lease_until_ms, event_json, then per delivery: id, endpoint
-- Returns the ids of the deliveries created, leased to the caller (lease 1).
local created = {}
for i = 3, #KEYS do
  local at = 6 + (i - 3) * 2
  local id, endpoint = ARGV[at], ARGV[at + 1]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'id', id, 'endpoint', endpoint, 'event', ARGV[5],
      'status', 'pending', 'attempts', 0, 'lease', 1, 'last_error', '',
      'created_ms', ARGV[3], 'updated_ms', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    created[#created + 1] = id
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return created
