-- Add tasks to one queue stream in one call (one command instead of one XADD each).
-- KEYS: queue stream
-- ARGV: k, then k field names, then k values per task
-- Returns the new entry ids.
local k = tonumber(ARGV[1])
local out = {}
local pos = k + 2
local fields = {}
for t = 1, (#ARGV - 1 - k) / k do
  for i = 1, k do
    fields[2 * i - 1] = ARGV[1 + i]
    fields[2 * i] = ARGV[pos]
    pos = pos + 1
  end
  out[t] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return out
