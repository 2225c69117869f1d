local key = KEYS[1]
local now = tonumber(ARGV[1])
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  local v, e = parse_head(redis.call('GETRANGE', key, 0, 511))
  if not v then return 0 end
  -- A live session, or a rotated id in its grace, is in the way.
  if tonumber(e) > now then
    -- This very create, sent again after its reply was lost (redis-rs resends a request
    -- whose connection failed): the value begins with a fresh random version, so a stored
    -- value equal to it byte for byte is this call's own, not a collision.
    if redis.call('GET', key) == ARGV[3] then return 1 end
    return 0
  end
elseif kind ~= 'none' then
  return 0
end
if tonumber(ARGV[2]) <= now then
  redis.call('DEL', key)
  return 1
end
redis.call('SET', key, ARGV[3], 'PXAT', ARGV[2])
return 1
