local key = KEYS[1]
local now = tonumber(ARGV[1])
local function unlisted()
  if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return 0
end
if redis.call('TYPE', key)['ok'] ~= 'string' then return unlisted() end
local head = redis.call('GETRANGE', key, 0, 511)
local v, e, abs, moved, at = parse_head(head)
if not v then return unlisted() end
if string.sub(head, at, at + #ARGV[2] - 1) ~= ARGV[2] then return unlisted() end
-- A rotated id whose session moved to the one kept: kept too, for its grace.
if moved and moved == ARGV[4] and tonumber(e) > now then return 0 end
redis.call('DEL', key)
unlisted()
if tonumber(e) <= now then return 0 end
-- A rotated id is not a session: not counted, but where it moved to is returned, so
-- that the session is ended there too.
if moved then return moved end
return 1
