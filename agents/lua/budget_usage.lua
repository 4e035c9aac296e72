-- Read a run's budget: limits, spent and held (after dropping lapsed holds). While
-- anything is held, holds made without a limit ('u') are given their expiry from now.
-- KEYS: budget, holds, expiry (see budget_reserve.lua)
-- ARGV: now_ms ('' = the server's clock)
-- Returns {max_tokens, max_nano, spent_tokens, spent_nano, held_tokens, held_nano}.
local now = clock(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'max_tokens', 'max_nano', 'spent_tokens',
  'spent_nano', 'held_tokens', 'held_nano')
local ht, hn = tonumber(b[5]) or 0, tonumber(b[6]) or 0
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
local writes = {}
for from = 1, #lapsed, 1000 do
  local fields = {}
  for k = from, math.min(from + 999, #lapsed) do fields[#fields + 1] = 'r:' .. lapsed[k] end
  local states = redis.call('HMGET', KEYS[1], unpack(fields))
  for k = 1, #fields do
    local id = lapsed[from + k - 1]
    local t, n = string.match(states[k] or redis.call('HGET', KEYS[2], id) or '',
      '^h (%d+) (%d+)$')
    if t then
      ht, hn = ht - tonumber(t), hn - tonumber(n)
      writes[#writes + 1] = fields[k]
      writes[#writes + 1] = 'x'
    end
  end
end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
if ht > 0 or hn > 0 then  -- holds without a limit: they lapse their TTL from now
  local all = redis.call('HGETALL', KEYS[1])
  for k = 1, #all, 2 do
    local t, n, ttl = string.match(all[k + 1], '^u (%d+) (%d+) (%d+)$')
    if t and string.sub(all[k], 1, 2) == 'r:' then
      writes[#writes + 1] = all[k]
      writes[#writes + 1] = 'h ' .. t .. ' ' .. n
      redis.call('ZADD', KEYS[3], int(now + tonumber(ttl)), string.sub(all[k], 3))
    end
  end
end
if #writes > 0 then  -- in chunks: unpack has a limit
  local kv = {'held_tokens', int(ht), 'held_nano', int(hn)}
  for _, v in ipairs(writes) do kv[#kv + 1] = v end
  hset_chunks(KEYS[1], kv)
end
return {tonumber(b[1]) or -1, tonumber(b[2]) or -1, tonumber(b[3]) or 0,
  tonumber(b[4]) or 0, ht, hn}
