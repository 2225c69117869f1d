local function parse_head(s)
  local v, e = string.match(s, '^(%d+):(%d+):')
  if not v or #v > 15 then return nil end
  local at = #v + #e + 3
  local abs = false
  if string.byte(s, at) == 64 then
    local a = string.match(s, '^@(%d+):', at)
    if not a or #a > 15 then return nil end
    abs = a
    at = at + #a + 2
  end
  local moved = false
  if string.byte(s, at) == 62 then
    local n = string.match(s, '^>(%d+):', at)
    if not n or #n > 3 or tonumber(n) < 1 then return nil end
    moved = string.sub(s, at + #n + 2, at + #n + 1 + tonumber(n))
    if #moved ~= tonumber(n) then return nil end
    at = at + #n + 2 + tonumber(n)
  end
  return v, e, abs, moved, at
end
