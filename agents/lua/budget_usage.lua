-- Read a run's budget: limits, spent and held (after dropping lapsed holds).
-- KEYS: budget, holds, expiry (see budget_reserve.lua)
-- ARGV: now_ms ('' = the server's clock)
-- Returns {max_tokens, max_nano, spent_tokens, spent_nano, held_tokens, held_nano}.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(lapsed) do
  local t, n = string.match(redis.call('HGET', KEYS[2], id) or '', '^h (%d+) (%d+)$')
  if t then
    redis.call('HINCRBY', KEYS[1], 'held_tokens', string.format('%d', -tonumber(t)))
    redis.call('HINCRBY', KEYS[1], 'held_nano', string.format('%d', -tonumber(n)))
    redis.call('HSET', KEYS[2], id, 'x')
  end
end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano')
return {tonumber(b[1]) or -1, tonumber(b[2]) or -1, tonumber(b[3]) or 0,
  tonumber(b[4]) or 0, tonumber(b[5]) or 0, tonumber(b[6]) or 0}
