-- Revoke a magic link for good: unless it was used, its spent key becomes "revoked",
-- also while a decision through it is in flight ("deciding"), and a revoked link
-- stays revoked (link_settle never takes a revocation back).
-- KEYS: spent
-- ARGV: revoked_json, keep_ms
-- Returns 1 revoked now, 0 already revoked or used.
local text = redis.call('GET', KEYS[1])
if text then
  local state = cjson.decode(text)['state']
  if state ~= 'deciding' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
