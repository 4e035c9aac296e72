-- Give back claims this worker holds on activities of one run that it will not run.
-- KEYS: claim keys; ARGV: worker_id
-- Returns how many claims were released.
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
