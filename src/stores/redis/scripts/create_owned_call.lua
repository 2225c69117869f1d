local r = create()
if r == 1 and tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  index(KEYS[2], ARGV[4], ARGV[2], ARGV[5], ARGV[6])
end
return r
