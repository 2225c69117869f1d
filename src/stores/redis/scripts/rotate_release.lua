local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'string' then return 0 end
if redis.call('GETRANGE', key, 0, #ARGV[1] - 1) ~= ARGV[1] then return 0 end
redis.call('DEL', key)
return 1
