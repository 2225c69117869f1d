local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return 0 end
if kind ~= 'string' then return -2 end
local head = redis.call('GETRANGE', key, 0, 511)
local v, e, abs, moved, at = parse_head(head)
if not v then return -2 end
if tonumber(e) <= now then return 0 end
-- A rotated id in its grace is read-only.
if moved then return 0 end
-- The new expiry, capped by the absolute expiry.
local t = ARGV[2]
if abs and tonumber(abs) < tonumber(t) then t = abs end
local tilde = string.sub(head, at, at) == '~'
if tonumber(t) <= now then
  if tilde and tonumber(ARGV[3]) > 0 then
    unindex(key, tonumber(ARGV[3]), owner_at(head, at))
  end
  redis.call('DEL', key)
  return 1
end
local owner = false
if tilde and tonumber(t) > tonumber(e) then
  owner = owner_at(head, at) or false
end
if #t == #e then
  -- Same width (the usual case): overwrite the expiry in place, without moving the data.
  redis.call('SETRANGE', key, #v + 1, t)
  redis.call('PEXPIREAT', key, t)
else
  local cur = redis.call('GET', key)
  redis.call('SET', key, v .. ':' .. t .. ':' .. string.sub(cur, #v + #e + 3), 'PXAT', t)
end
if owner then
  local plen = tonumber(ARGV[3])
  if plen < 1 then return {1, owner, t} end
  -- One server: the index entry follows in this same script.
  index(index_key(key, plen, owner), string.sub(key, plen + 1), t, ARGV[4], ARGV[5])
end
return 1
