-- Drop the queued requests of a replica that died (their liveness expired) for one model.
-- KEYS[1] wait:{model}  KEYS[2] wait-lease:{model}  KEYS[3] wait-first:{model}
-- ARGV: now_ms, counters_prefix, model, channel. Returns the dropped request ids.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, w in ipairs(dead) do
  redis.call('ZREM', KEYS[1], w)
  redis.call('ZREM', KEYS[2], w)
  local node = redis.call('HGET', KEYS[3], w)
  if node then
    redis.call('HDEL', KEYS[3], w)
    redis.call('HINCRBY', ARGV[2] .. node .. '|' .. ARGV[3], 'pending', -1)
  end
end
if #dead > 0 and redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return dead
