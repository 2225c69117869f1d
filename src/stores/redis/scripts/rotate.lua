local now = tonumber(ARGV[1])
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return 0 end
local cur = redis.call('GET', KEYS[1])
local v, e, abs, moved, at = parse_head(cur)
if not v then return -2 end
-- No live session under old, or old is itself a rotated id: absent.
if tonumber(e) <= now or moved then return 0 end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind == 'string' then
  -- A live session, a rotated id in its grace or an unreadable value under new: taken.
  local nv, ne = parse_head(redis.call('GETRANGE', KEYS[2], 0, 511))
  if not nv or tonumber(ne) > now then return -1 end
elseif kind ~= 'none' then
  return -1
end
local old = tonumber(v)
local nextv
if old >= 1 and old < 999999999999999 then
  nextv = old + 1
else
  nextv = tonumber(ARGV[3])
end
local absf = ''
if abs then absf = '@' .. abs .. ':' end
-- The owner field (if any) and the data.
local rest = string.sub(cur, at)
redis.call('SET', KEYS[2], string.format('%d', nextv) .. ':' .. e .. ':' .. absf .. rest, 'PXAT', e)
local plen = tonumber(ARGV[4])
local owner = false
if string.byte(cur, at) == 126 then owner = owner_at(cur, at) or false end
if owner and plen > 0 then
  index(index_key(KEYS[2], plen, owner), ARGV[5], e, ARGV[6], ARGV[7])
end
-- The old id: read-only until the end of its grace (never later than its own expiry).
local ends = ARGV[2]
if tonumber(ends) > tonumber(e) then ends = e end
if tonumber(ends) <= now then
  if owner then unindex(KEYS[1], plen, owner) end
  redis.call('DEL', KEYS[1])
else
  local id = ARGV[5]
  redis.call('SET', KEYS[1], v .. ':' .. ends .. ':' .. absf .. '>' .. #id .. ':' .. id .. rest, 'PXAT', ends)
end
return nextv
