local key = KEYS[1]
local now = tonumber(ARGV[1])
local cas = ARGV[2] == 'cas'
local live = '0'
-- The absolute expiry of the live session, if it has one.
local kept = false
-- Where the stored value's owner field starts, if it names an owner.
local tilde = false
local kind = redis.call('TYPE', key)['ok']
if kind == 'string' then
  -- Only the head is needed: a version of at most 15 digits, an expiry and the fields.
  local cur = redis.call('GETRANGE', key, 0, 511)
  local v, e, abs, moved, at = parse_head(cur)
  if v then
    if tonumber(e) > now then
      -- A rotated id in its grace is read-only.
      if moved then return -3 end
      live = v
      kept = abs
    end
    if string.byte(cur, at) == 126 then tilde = at end
  elseif cas then
    return -2
  end
elseif kind ~= 'none' and cas then
  return -2
end
-- The expiry and absolute expiry of a new incarnation: the written ones, capped.
local abs = ARGV[8]
local exp = ARGV[4]
if abs ~= '' and tonumber(abs) < tonumber(exp) then exp = abs end
local function absf(a)
  if a == '' then return '' end
  return '@' .. a .. ':'
end
if cas and live ~= ARGV[3] then
  -- A compare-and-set from no session, sent again after its reply was lost (redis-rs
  -- resends a request whose connection failed): its value begins with a fresh random
  -- version, so a stored value equal to it byte for byte is this call's own write.
  if ARGV[3] == '0' and live == ARGV[6]
    and redis.call('GET', key) == ARGV[6] .. ':' .. exp .. ':' .. absf(abs) .. ARGV[5] then
    return tonumber(ARGV[6])
  end
  return -1
end
-- Over a live session the earlier absolute expiry is kept, and caps the expiry.
if live ~= '0' and kept then
  if abs == '' or tonumber(kept) < tonumber(abs) then abs = kept end
  if tonumber(abs) < tonumber(exp) then exp = abs end
end
-- live has at most 15 digits, so live + 1 is exact; a fresh version (ARGV[6]) is below 2^49.
local cur = tonumber(live)
local nextv
if cur >= 1 and cur < 999999999999999 then
  nextv = cur + 1
else
  nextv = tonumber(ARGV[6])
end
-- The stored value names an owner and this write changes or removes it, or deletes the
-- session: that owner's index loses the entry (single server only).
if tilde and tonumber(ARGV[7]) > 0 then
  local old = owner_at(redis.call('GETRANGE', key, 0, 511), tilde)
  if old and (tonumber(exp) <= now or old ~= owner_at(ARGV[5], 1)) then
    unindex(key, tonumber(ARGV[7]), old)
  end
end
if tonumber(exp) <= now then
  redis.call('DEL', key)
  return 0
end
-- The head, then the payload appended: no Lua string of the whole value is ever made
-- (concatenating one costs a copy that grows with the payload; APPEND keeps the expiry).
redis.call('SET', key, string.format('%d', nextv) .. ':' .. exp .. ':' .. absf(abs), 'PXAT', exp)
-- Redis' own clock may be past the expiry although the caller's was not (a script started
-- late, a paused client, a caller's clock behind): SET then stored nothing, and APPEND would
-- make a key of the payload alone, with no head and no expiry, that lives forever.
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('APPEND', key, ARGV[5])
return nextv
