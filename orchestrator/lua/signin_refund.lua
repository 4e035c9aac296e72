-- Give back an attempt signin_take allowed (the token was right): it is no failure.
-- KEYS: the counters signin_take counted it in
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 0
