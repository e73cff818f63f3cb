-- Admit one request of a rate-limited client key, or say which limit it is over.
-- KEYS[1] rate:req|{minute}|{app}  KEYS[2] rate:tok|{minute}|{app}
-- ARGV: requests_per_minute (0: none), tokens_per_minute (0: none), ttl seconds
-- Returns 0 if admitted (the request is counted), 1 if over the request limit, 2 if over
-- the token limit. A refused request counts too: a client hammering the limit stays out
-- until the minute ends instead of slipping in as others finish.
local tpm = tonumber(ARGV[2])
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then
  return 2
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
local rpm = tonumber(ARGV[1])
if rpm > 0 and n > rpm then
  return 1
end
return 0
