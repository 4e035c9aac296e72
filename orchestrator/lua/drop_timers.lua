-- The timers take_timers.lua took are on the run queue: forget them, each only if its
-- score is still the one that take set (else another take has it since: its own).
-- KEYS: firing
-- ARGV: again_ms, run_id...
local again = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == again then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
