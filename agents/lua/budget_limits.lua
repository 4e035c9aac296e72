-- Set (or clear, with '') a run's token and USD limits. Spent and held stay as they are.
-- Setting a limit gives holds made without one ('u', see budget_reserve.lua) their
-- expiry from now, so the sweeps under the limit find them.
-- KEYS: budget, holds, expiry (see budget_reserve.lua)
-- ARGV: max_tokens, max_nano ('' = no limit), now_ms ('' = the server's clock)
local fields = {'max_tokens', 'max_nano'}
for i = 1, 2 do
  if ARGV[i] == '' then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    redis.call('HSET', KEYS[1], fields[i], ARGV[i])
  end
end
redis.call('HSETNX', KEYS[1], 'spent_tokens', '0')
if ARGV[1] == '' and ARGV[2] == '' then return 1 end
local now = clock(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for k = 1, #all, 2 do
  local t, n, ttl = string.match(all[k + 1], '^u (%d+) (%d+) (%d+)$')
  if t and string.sub(all[k], 1, 2) == 'r:' then
    redis.call('HSET', KEYS[1], all[k], 'h ' .. t .. ' ' .. n)
    redis.call('ZADD', KEYS[3], int(now + tonumber(ttl)), string.sub(all[k], 3))
  end
end
return 1
