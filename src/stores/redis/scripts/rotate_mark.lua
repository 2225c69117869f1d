local key = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('TYPE', key)['ok'] ~= 'string' then return 0 end
-- Old still holds what was read: the same head (version, expiry, absolute expiry, owner).
if redis.call('GETRANGE', key, 0, #ARGV[2] - 1) ~= ARGV[2] then return 0 end
local cur = redis.call('GET', key)
local v, e, abs, moved, at = parse_head(cur)
if not v or moved or tonumber(e) <= now then return 0 end
local ends = ARGV[3]
if tonumber(ends) > tonumber(e) then ends = e end
if tonumber(ends) <= now then
  redis.call('DEL', key)
  return 1
end
local absf = ''
if abs then absf = '@' .. abs .. ':' end
local id = ARGV[4]
redis.call('SET', key, v .. ':' .. ends .. ':' .. absf .. '>' .. #id .. ':' .. id .. string.sub(cur, at), 'PXAT', ends)
return 1
