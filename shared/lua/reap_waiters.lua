-- Drop the queued requests of a replica that died (their liveness expired) for one model.
-- KEYS[1..7] the queue of the model (see _queue.lua)
-- ARGV: now_ms, model, channel
-- Returns the dropped request ids.
--@include _queue
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, w in ipairs(dead) do
  if not unqueue(w, false) then redis.call('ZREM', KEYS[2], w) end
end
if #dead > 0 and redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return dead
