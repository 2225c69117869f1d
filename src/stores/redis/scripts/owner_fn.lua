local function owner_at(head, at)
  local n = string.match(head, '^~(%d+):', at)
  if not n then return nil end
  local len = tonumber(n)
  local owner = string.sub(head, at + #n + 2, at + #n + 1 + len)
  if len < 1 or #owner ~= len then return nil end
  return owner
end
local function index_key(key, plen, owner)
  local hexed = string.gsub(owner, '.', function(c) return string.format('%02x', string.byte(c)) end)
  return string.sub(key, 1, plen) .. 'owner:{' .. hexed .. '}'
end
local function unindex(key, plen, owner)
  if plen < 1 or not owner then return end
  redis.call('ZREM', index_key(key, plen, owner), string.sub(key, plen + 1))
end
