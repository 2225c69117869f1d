local r = write()
if r > 0 then index(KEYS[2], ARGV[9], ARGV[4], ARGV[10], ARGV[11]) end
return r
