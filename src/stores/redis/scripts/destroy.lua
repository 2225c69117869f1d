local key = KEYS[1]
local head = redis.pcall('GETRANGE', key, 0, 255)
if type(head) == 'string' then
  local v, e = string.match(head, '^(%d+):(%d+):~')
  if v then unindex(key, tonumber(ARGV[1]), owner_at(head, #v + #e + 3)) end
end
return redis.call('UNLINK', key)
