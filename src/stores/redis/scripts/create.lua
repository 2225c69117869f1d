local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  local cur = redis.call('GETRANGE', key, 0, 63)
  local v, e = string.match(cur, '^(%d+):(%d+):')
  if not v or #v > 15 or tonumber(e) > now then return 0 end
elseif kind ~= 'none' then
  return 0
end
if tonumber(ARGV[2]) <= now then
  redis.call('DEL', key)
  return 1
end
redis.call('SET', key, ARGV[3], 'PXAT', ARGV[2])
return 1
