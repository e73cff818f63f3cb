-- Smallest script: proves the loader works. KEYS[1] = a key, ARGV[1] = a value to echo.
redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000)
return redis.call('GET', KEYS[1])
