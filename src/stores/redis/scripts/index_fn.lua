local function index(key, id, score, cutoff, grace)
  redis.call('ZADD', key, 'GT', score, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    local at = tonumber(top[2]) + tonumber(grace)
    if at < 1e15 then
      redis.call('PEXPIREAT', key, string.format('%d', at))
    else
      redis.call('PERSIST', key)
    end
  end
  return 1
end
