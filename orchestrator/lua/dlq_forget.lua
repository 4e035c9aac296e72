-- Delete the dead-letter entries of deleted runs from one queue's dead letters.
-- Entries that do not exist are skipped.
-- KEYS: the queue's dead-letter index, then one entry key per entry
-- ARGV: one entry id (RUN/SEQ) per entry key
-- Returns how many entries were deleted.
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  redis.call('DEL', KEYS[i])
end
return n
