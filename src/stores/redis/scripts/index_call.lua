return index(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
