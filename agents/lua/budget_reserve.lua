-- Hold a call's estimated tokens and USD against a run's budget, or refuse.
-- Spent + held + asked must stay within each limit that is set, so concurrent callers
-- can never overspend together. Holds left by a dead caller lapse (swept here when a
-- limit is set; budget_usage sweeps them for anyone reading), or are taken over.
-- KEYS: budget (hash: max_tokens, max_nano, spent_*, held_*; 'r:ID' -> 'h TOKENS NANO'
--               while held under a limit, 'u TOKENS NANO TTL_MS' while held without
--               one, then 's' settled | 'r' released | 'x' lapsed | 't' taken over;
--               'k:KEY' -> the id last held under KEY),
--       holds (hash id -> the same states: where older versions kept them; only read),
--       expiry (zset id -> ms when an 'h' hold lapses; an id is left in it after its
--               hold settles, until that time passes: the sweeps skip what is not held)
-- A hold without a limit ('u') has no expiry entry and reads no clock: nothing needs
-- it exact until someone looks. Setting a limit, or reading the usage while anything
-- is held, turns each 'u' hold into an 'h' one that lapses its TTL later (so it lapses
-- late, never early).
-- ARGV: id, tokens, nano (USD * 1e9), now_ms ('' = the server's clock), hold_ttl_ms,
--       key ('' = none): a hold still held under the same key (its caller died before
--       settling, and this call runs again in its place) is given back first
-- Returns {ok, max_tokens, max_nano, spent_tokens, spent_nano, held_tokens, held_nano,
--          over} with max -1 for none, ok 0 when refused (over = 1 tokens + 2 usd), 1 when
-- held, 2 when the id already holds (the same reservation sent twice).
-- The common case (no hold to take over) is HMGET, HSET; under a limit also TIME,
-- ZRANGEBYSCORE (lapsed holds) and ZADD.

local id, key = ARGV[1], ARGV[6]
local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano', 'r:' .. id, key == '' and 'r:' .. id or 'k:' .. key)
local maxt, maxn = tonumber(b[1]), tonumber(b[2])
local st, sn = tonumber(b[3]) or 0, tonumber(b[4]) or 0
local ht, hn = tonumber(b[5]) or 0, tonumber(b[6]) or 0
if b[7] then return {2, maxt or -1, maxn or -1, st, sn, ht, hn, 0} end

local writes = {}  -- field, value pairs of KEYS[1]: one HSET at the end
-- HSET of the held totals and writes (in chunks: unpack has a limit).
local function flush()
  local kv = {'held_tokens', int(ht), 'held_nano', int(hn)}
  for _, v in ipairs(writes) do kv[#kv + 1] = v end
  hset_chunks(KEYS[1], kv)
end
-- Drop the holds of ids (their states in states, nil: look in the older holds hash).
local function drop(ids, states, mark)
  for k, hid in ipairs(ids) do
    local t, n = string.match(states[k] or redis.call('HGET', KEYS[2], hid) or '',
      '^[hu] (%d+) (%d+)')
    if t then
      ht, hn = ht - tonumber(t), hn - tonumber(n)
      writes[#writes + 1] = 'r:' .. hid
      writes[#writes + 1] = mark
    end
  end
end

if key ~= '' and b[8] then
  drop({b[8]}, {redis.call('HGET', KEYS[1], 'r:' .. b[8])}, 't')
end

local now
if maxt or maxn then  -- only a limit needs the held totals exact before checking
  now = clock(ARGV[4])
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for from = 1, #lapsed, 1000 do
    local part, fields = {}, {}
    for k = from, math.min(from + 999, #lapsed) do
      part[#part + 1] = lapsed[k]
      fields[#fields + 1] = 'r:' .. lapsed[k]
    end
    drop(part, redis.call('HMGET', KEYS[1], unpack(fields)), 'x')
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
  local askt, askn = tonumber(ARGV[2]), tonumber(ARGV[3])
  local over = 0
  if maxt and st + ht + askt > maxt then over = over + 1 end
  if maxn and sn + hn + askn > maxn then over = over + 2 end
  if over > 0 then
    if #writes > 0 then flush() end
    return {0, maxt or -1, maxn or -1, st, sn, ht, hn, over}
  end
end

ht, hn = ht + tonumber(ARGV[2]), hn + tonumber(ARGV[3])
writes[#writes + 1] = 'r:' .. id
if now then
  writes[#writes + 1] = 'h ' .. ARGV[2] .. ' ' .. ARGV[3]
else
  writes[#writes + 1] = 'u ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[5]
end
if key ~= '' then
  writes[#writes + 1] = 'k:' .. key
  writes[#writes + 1] = id
end
flush()
if now then redis.call('ZADD', KEYS[3], int(now + tonumber(ARGV[5])), id) end
return {1, maxt or -1, maxn or -1, st, sn, ht, hn, 0}
