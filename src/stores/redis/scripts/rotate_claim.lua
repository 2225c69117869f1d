local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  local v, e = parse_head(redis.call('GETRANGE', key, 0, 511))
  if not v or tonumber(e) > tonumber(ARGV[1]) then return 0 end
elseif kind ~= 'none' then
  return 0
end
redis.call('SET', key, ARGV[2], 'PXAT', ARGV[3])
return 1
