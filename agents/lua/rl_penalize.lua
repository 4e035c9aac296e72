-- Block a rate limiter for everyone until now + block_ms (a 429's Retry-After, an
-- exhausted x-ratelimit-remaining-*). A longer block already in place is kept.
-- KEYS: state (hash: last), block (string: blocked-until ms)
-- ARGV: now_ms ('' = the server's clock), block_ms
-- Returns how many ms the limiter stays blocked from now.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if last and last > now then now = last end
local untl = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[2]))
if cur and cur >= untl then return cur - now end
redis.call('SET', KEYS[2], string.format('%d', untl), 'PX', tonumber(ARGV[2]) + 1000)
return untl - now
