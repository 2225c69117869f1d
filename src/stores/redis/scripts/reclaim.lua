local removed = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local dead = true
  if redis.call('TYPE', key)['ok'] == 'string' then
    local head = redis.call('GETRANGE', key, 0, 511)
    local v, e, abs, moved, at = parse_head(head)
    if v and tonumber(e) >= tonumber(ARGV[1]) then
      dead = string.sub(head, at, at + #ARGV[2] - 1) ~= ARGV[2]
    end
  end
  if dead then removed = removed + redis.call('ZREM', KEYS[1], ARGV[i + 1]) end
end
return removed
