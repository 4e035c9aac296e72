-- Give a reservation's hold back (the call failed before spending anything).
-- Releasing twice, or after settling, changes nothing.
-- KEYS: budget, holds, expiry (see budget_reserve.lua)
-- ARGV: id
-- Returns {applied, max_tokens, max_nano, spent_tokens, spent_nano, held_tokens,
--          held_nano}.
local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano', 'r:' .. ARGV[1])
local h = b[7] or redis.call('HGET', KEYS[2], ARGV[1])  -- else: held by an older version
local t, n = string.match(h or '', '^[hu] (%d+) (%d+)')
local ht, hn = tonumber(b[5]) or 0, tonumber(b[6]) or 0
local applied = 0
if t then
  ht, hn, applied = ht - tonumber(t), hn - tonumber(n), 1
  redis.call('HSET', KEYS[1], 'held_tokens', int(ht), 'held_nano', int(hn), 'r:' .. ARGV[1], 'r')
end
return {applied, tonumber(b[1]) or -1, tonumber(b[2]) or -1, tonumber(b[3]) or 0,
  tonumber(b[4]) or 0, ht, hn}
