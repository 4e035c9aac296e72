-- Hold a call's estimated tokens and USD against a run's budget, or refuse.
-- Spent + held + asked must stay within each limit that is set, so concurrent callers
-- can never overspend together. Holds left by a dead caller lapse (swept here when a
-- limit is set; budget_usage sweeps them for anyone reading), or are taken over.
-- KEYS: budget (hash: max_tokens, max_nano, spent_*, held_*),
--       holds (hash id -> 'h TOKENS NANO' | 's' settled | 'r' released | 'x' lapsed
--              | 't' taken over; 'k:KEY' -> the id last held under KEY),
--       expiry (zset id -> ms when the hold lapses)
-- ARGV: id, tokens, nano (USD * 1e9), now_ms ('' = the server's clock), hold_ttl_ms,
--       key ('' = none): a hold still held under the same key (its caller died before
--       settling, and this call runs again in its place) is given back first
-- Returns {ok, max_tokens, max_nano, spent_tokens, spent_nano, held_tokens, held_nano,
--          over} with max -1 for none, ok 0 when refused (over = 1 tokens + 2 usd), 1 when
-- held, 2 when the id already holds (the same reservation sent twice).
local function int(n) return string.format('%d', n) end

local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano')
local maxt, maxn = tonumber(b[1]), tonumber(b[2])
local st, sn = tonumber(b[3]) or 0, tonumber(b[4]) or 0
local ht, hn = tonumber(b[5]) or 0, tonumber(b[6]) or 0

local hold = 'h ' .. ARGV[2] .. ' ' .. ARGV[3]
local changed = false
local function drop(id, mark)
  local t, n = string.match(redis.call('HGET', KEYS[2], id) or '', '^h (%d+) (%d+)$')
  if t then
    ht, hn, changed = ht - tonumber(t), hn - tonumber(n), true
    redis.call('HSET', KEYS[2], id, mark)
  end
  return t
end

if ARGV[6] == '' then
  if redis.call('HSETNX', KEYS[2], ARGV[1], hold) == 0 then
    return {2, maxt or -1, maxn or -1, st, sn, ht, hn, 0}
  end
else
  local prev = redis.call('HGET', KEYS[2], 'k:' .. ARGV[6])
  if prev == ARGV[1] then return {2, maxt or -1, maxn or -1, st, sn, ht, hn, 0} end
  if prev and drop(prev, 't') then redis.call('ZREM', KEYS[3], prev) end
end

if maxt or maxn then  -- only a limit needs the held totals exact before checking
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, id in ipairs(lapsed) do drop(id, 'x') end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
  local askt, askn = tonumber(ARGV[2]), tonumber(ARGV[3])
  local over = 0
  if maxt and st + ht + askt > maxt then over = over + 1 end
  if maxn and sn + hn + askn > maxn then over = over + 2 end
  if over > 0 then
    if ARGV[6] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) end
    if changed then
      redis.call('HSET', KEYS[1], 'held_tokens', int(ht), 'held_nano', int(hn))
    end
    return {0, maxt or -1, maxn or -1, st, sn, ht, hn, over}
  end
end

if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], hold, 'k:' .. ARGV[6], ARGV[1]) end
ht, hn = ht + tonumber(ARGV[2]), hn + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'held_tokens', int(ht), 'held_nano', int(hn))
redis.call('ZADD', KEYS[3], int(now + tonumber(ARGV[5])), ARGV[1])
return {1, maxt or -1, maxn or -1, st, sn, ht, hn, 0}
