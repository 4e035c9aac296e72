-- Put before every script LuaScripts runs, the engine's (this folder) and the LLM layer's
-- (taskloom/agents/lua): local helpers they share. No script of its own.

-- n as an integer string (no exponent, no decimals).
local function int(n) return string.format('%d', n) end

-- The caller's clock (ms, a number as a string) if given, else the server's.
local function clock(given)
  local now = tonumber(given)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- HSET key with the field, value pairs of kv, in chunks (unpack has a limit).
local function hset_chunks(key, kv)
  for from = 1, #kv, 2000 do
    redis.call('HSET', key, unpack(kv, from, math.min(from + 1999, #kv)))
  end
end

-- HMGET key of fields, in chunks (unpack has a limit): the values, in order.
local function hmget(key, fields)
  local out = {}
  for from = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, from, math.min(from + 999, #fields)))
    for k = 1, #part do out[from + k - 1] = part[k] end
  end
  return out
end

