local r = write()
if r > 0 then index(KEYS[2], ARGV[8], ARGV[4], ARGV[9], ARGV[10]) end
return r
