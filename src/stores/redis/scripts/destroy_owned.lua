local key = KEYS[1]
local function unlisted()
  if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return 0
end
if redis.call('TYPE', key)['ok'] ~= 'string' then return unlisted() end
local head = redis.call('GETRANGE', key, 0, 255)
local v, e = string.match(head, '^(%d+):(%d+):')
if not v or #v > 15 then return unlisted() end
local at = #v + #e + 3
if string.sub(head, at, at + #ARGV[2] - 1) ~= ARGV[2] then return unlisted() end
redis.call('DEL', key)
unlisted()
if tonumber(e) <= tonumber(ARGV[1]) then return 0 end
return 1
