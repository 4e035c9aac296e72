-- Replace a call's reserved tokens with the tokens it actually used.
-- A call whose entry has left the window changes nothing: its minute is over.
-- KEYS: log (zset), tokens (hash id -> tokens), state (hash: sum)
-- ARGV: id, actual_tokens
-- Returns the change applied to the window's sum (0 when the entry has gone).
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if not cur then return 0 end
local delta = tonumber(ARGV[2]) - cur
if delta ~= 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'sum', string.format('%d', delta))
end
return delta
