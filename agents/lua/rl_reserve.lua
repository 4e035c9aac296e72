-- Admit one call to a shared rate limiter, or say how long to wait.
-- A sliding-window log: every admitted call is an entry (id -> admission time) in a
-- sorted set, its tokens in a hash, and their running sum in the state hash.
-- KEYS: log (zset id -> ms), tokens (hash id -> tokens), state (hash: sum, last),
--       block (string: blocked-until ms, set by rl_penalize)
-- ARGV: now_ms ('' = the server's clock), window_ms, rpm (-1 = none), tpm (-1 = none),
--       tokens, id, ttl_ms
-- Returns {1, admitted_at_ms} or {0, wait_ms, reason} (1 blocked, 2 rpm, 3 tpm).

local now = clock(ARGV[1])
-- Admission times never go backwards, even when callers' clocks differ a little:
-- the window arithmetic below relies on it.
local last = tonumber(redis.call('HGET', KEYS[3], 'last'))
if last and last > now then now = last end

local window, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ask, id, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local seen = redis.call('ZSCORE', KEYS[1], id)
if seen then return {1, tonumber(seen)} end  -- this call was admitted already

-- Entries at or before now - window have left the window.
local cutoff = now - window
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local sum = tonumber(redis.call('HGET', KEYS[3], 'sum')) or 0
if #old > 0 then
  for _, e in ipairs(old) do
    sum = sum - (tonumber(redis.call('HGET', KEYS[2], e)) or 0)
  end
  for i = 1, #old, 1000 do
    redis.call('HDEL', KEYS[2], unpack(old, i, math.min(i + 999, #old)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
end
local count = redis.call('ZCARD', KEYS[1])
if count == 0 then sum = 0 end
redis.call('HSET', KEYS[3], 'sum', int(sum), 'last', int(now))
redis.call('PEXPIRE', KEYS[3], ttl)

local blocked = tonumber(redis.call('GET', KEYS[4]))
if blocked and blocked > now then return {0, blocked - now, 1} end
if rpm < 0 and tpm < 0 then return {1, now} end  -- unlimited: nothing to count

local wait, reason = 0, 0
if rpm >= 0 and count + 1 > rpm then
  -- the (count - rpm + 1)-th oldest entry must leave before one more fits
  local e = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait, reason = tonumber(e[2]) + window - now, 2
end
if tpm >= 0 and sum + ask > tpm then
  -- walk from the oldest entry until enough tokens would have left
  local need, freed, start, at = sum + ask - tpm, 0, 0, nil
  while not at do
    local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[2], page[i])) or 0)
      if freed >= need then at = tonumber(page[i + 1]); break end
    end
    start = start + 100
  end
  if at then
    if at + window - now > wait then wait, reason = at + window - now, 3 end
  else
    -- the sum had drifted from the log (keys lost): trust the log
    sum = freed
    redis.call('HSET', KEYS[3], 'sum', int(sum))
    if sum + ask > tpm and window > wait then wait, reason = window, 3 end
  end
end
if wait > 0 then return {0, wait, reason} end

redis.call('ZADD', KEYS[1], int(now), id)
redis.call('HSET', KEYS[2], id, int(ask))
redis.call('HSET', KEYS[3], 'sum', int(sum + ask))
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {1, now}
