-- Take one sign-in attempt (an inbox token or a metrics bearer to check) for a client.
-- KEYS: this client's counter, everyone's counter (both of the current window)
-- ARGV: client limit, everyone's limit, ms to keep the counters
-- Returns {0, n}: allowed (n: this client's attempts so far in the window, this one
-- included); {1, n}: refused, the client is over its own limit (counted all the same,
-- so the first refusal can be told apart); {2, n}: refused, everyone's limit is reached
-- (not held against this client; counted in everyone's, so the first such refusal can
-- be told apart too). The caller gives the attempt back with signin_refund
-- when the token was right, so only failures use up the limits.
local c = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if c > tonumber(ARGV[1]) then
  return {1, c}
end
local g = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if g > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  return {2, g}
end
return {0, c}
