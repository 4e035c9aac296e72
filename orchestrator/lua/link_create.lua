-- Make a magic link; a link for a named reviewer becomes their one live link to the
-- task and revokes the one it replaces (as link_revoke does), in the same step.
-- Refused when the reviewer's live link is no longer the one the caller saw.
-- KEYS: record, task's link set, task's live links, replaced link's spent key
--       (any {links} key when there is none)
-- ARGV: link_id, record_json, keep_ms, set_ttl_ms, reviewer ('' for none),
--       expected live id ('' for none), revoked_json
-- Returns 1 made, 0 refused (try again).
if ARGV[5] ~= '' then
  local live = redis.call('HGET', KEYS[3], ARGV[5])
  if not live then live = '' end
  if live ~= ARGV[6] then return 0 end
  if live ~= '' then
    local text = redis.call('GET', KEYS[4])
    if not text or cjson.decode(text)['state'] == 'deciding' then
      redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[3])
    end
  end
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
