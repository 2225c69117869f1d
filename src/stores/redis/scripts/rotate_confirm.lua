local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'string' then return 0 end
if redis.call('GETRANGE', key, 0, #ARGV[1] - 1) ~= ARGV[1] then return 0 end
local cur = redis.call('GET', key)
redis.call('SET', key, ARGV[2] .. string.sub(cur, #ARGV[1] + 1), 'PXAT', ARGV[3])
return 1
