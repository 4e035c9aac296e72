-- Delete a run: every key it owns in its slot, unless it has not ended.
-- KEYS: meta, then every other key of the run (Keys.owned: log, steps, ..., budget,
--       the claim and live stream of each of its steps)
-- Returns {'active', status} (nothing deleted), or {'deleted', status} ('' for a run
-- whose meta was gone already: what was left of it is deleted all the same).
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'pending' or status == 'running' or status == 'waiting' then
  return {'active', status}
end
for i = 1, #KEYS, 500 do
  redis.call('UNLINK', unpack(KEYS, i, math.min(i + 499, #KEYS)))
end
return {'deleted', status or ''}
