-- Set (or clear, with '') a run's token and USD limits. Spent and held stay as they are.
-- KEYS: budget (see budget_reserve.lua)
-- ARGV: max_tokens, max_nano ('' = no limit)
local fields = {'max_tokens', 'max_nano'}
for i = 1, 2 do
  if ARGV[i] == '' then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    redis.call('HSET', KEYS[1], fields[i], ARGV[i])
  end
end
redis.call('HSETNX', KEYS[1], 'spent_tokens', '0')
return 1
