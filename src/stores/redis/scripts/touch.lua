local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then return 0 end
if kind ~= 'string' then return -2 end
local head = redis.call('GETRANGE', key, 0, 63)
local v, e = string.match(head, '^(%d+):(%d+):')
if not v or #v > 15 then return -2 end
if tonumber(e) <= now then return 0 end
local at = #v + #e + 3
local tilde = string.sub(head, at, at) == '~'
if tonumber(ARGV[2]) <= now then
  if tilde and tonumber(ARGV[3]) > 0 then
    unindex(key, tonumber(ARGV[3]), owner_at(redis.call('GETRANGE', key, 0, 255), at))
  end
  redis.call('DEL', key)
  return 1
end
local owner = false
if tilde and tonumber(ARGV[2]) > tonumber(e) then
  owner = owner_at(redis.call('GETRANGE', key, 0, 255), at) or false
end
if #ARGV[2] == #e then
  -- Same width (the usual case): overwrite the expiry in place, without moving the data.
  redis.call('SETRANGE', key, #v + 1, ARGV[2])
  redis.call('PEXPIREAT', key, ARGV[2])
else
  local cur = redis.call('GET', key)
  redis.call('SET', key, v .. ':' .. ARGV[2] .. ':' .. string.sub(cur, #v + #e + 3), 'PXAT', ARGV[2])
end
if owner then
  local plen = tonumber(ARGV[3])
  if plen < 1 then return {1, owner} end
  -- One server: the index entry follows in this same script.
  index(index_key(key, plen, owner), string.sub(key, plen + 1), ARGV[2], ARGV[4], ARGV[5])
end
return 1
