-- Replace a reservation's hold with what the call actually spent. Settling twice
-- counts once; a hold that lapsed or was released is still charged: the money is gone.
-- KEYS: budget, holds, expiry (see budget_reserve.lua; the id stays in expiry until its
--       time passes: the sweeps skip what is not held)
-- ARGV: id, tokens, nano
-- Returns {applied, max_tokens, max_nano, spent_tokens, spent_nano, held_tokens,
--          held_nano} (applied 0: already settled).
local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano', 'r:' .. ARGV[1])
local h = b[7] or redis.call('HGET', KEYS[2], ARGV[1])  -- else: held by an older version
local st, sn = tonumber(b[3]) or 0, tonumber(b[4]) or 0
local ht, hn = tonumber(b[5]) or 0, tonumber(b[6]) or 0
if h == 's' then return {0, tonumber(b[1]) or -1, tonumber(b[2]) or -1, st, sn, ht, hn} end
st, sn = st + tonumber(ARGV[2]), sn + tonumber(ARGV[3])
local t, n = string.match(h or '', '^[hu] (%d+) (%d+)')
if t then
  ht, hn = ht - tonumber(t), hn - tonumber(n)
  redis.call('HSET', KEYS[1], 'spent_tokens', int(st), 'spent_nano', int(sn),
    'held_tokens', int(ht), 'held_nano', int(hn), 'r:' .. ARGV[1], 's')
else
  redis.call('HSET', KEYS[1], 'spent_tokens', int(st), 'spent_nano', int(sn),
    'r:' .. ARGV[1], 's')
end
return {1, tonumber(b[1]) or -1, tonumber(b[2]) or -1, st, sn, ht, hn}
