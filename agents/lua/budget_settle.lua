-- Replace a reservation's hold with what the call actually spent. Settling twice
-- counts once; a hold that lapsed or was released is still charged: the money is gone.
-- KEYS: budget, holds, expiry (see budget_reserve.lua)
-- ARGV: id, tokens, nano
-- Returns {applied, max_tokens, max_nano, spent_tokens, spent_nano, held_tokens,
--          held_nano} (applied 0: already settled).
local function usage(applied)
  local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
    'spent_nano', 'held_tokens', 'held_nano')
  return {applied, tonumber(b[1]) or -1, tonumber(b[2]) or -1, tonumber(b[3]) or 0,
    tonumber(b[4]) or 0, tonumber(b[5]) or 0, tonumber(b[6]) or 0}
end

local h = redis.call('HGET', KEYS[2], ARGV[1])
if h == 's' then return usage(0) end
local t, n = string.match(h or '', '^h (%d+) (%d+)$')
if t then
  redis.call('HINCRBY', KEYS[1], 'held_tokens', string.format('%d', -tonumber(t)))
  redis.call('HINCRBY', KEYS[1], 'held_nano', string.format('%d', -tonumber(n)))
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'spent_tokens', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'spent_nano', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], 's')
return usage(1)
