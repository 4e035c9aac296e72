-- Finish a decision through a magic link that link_take (SET NX "deciding") started:
-- mark the link used, or, when the inbox refused the decision, give the link back.
-- Only while the spent key still holds this very decision's "deciding" mark: a
-- revocation that came meanwhile replaced it, and the revocation wins either way.
-- KEYS: spent
-- ARGV: nonce, used_json ('' gives the link back), keep_ms
-- Returns 1 settled, 0 left alone (revoked meanwhile).
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local spent = cjson.decode(text)
if spent['state'] ~= 'deciding' or spent['nonce'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
