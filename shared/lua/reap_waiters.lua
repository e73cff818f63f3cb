-- Drop the queued requests of a replica that died (their liveness expired) for one model.
-- A waiter leaving frees no slot, so nothing is settled.
-- KEYS[1..12] the queue of the model (see _queue.lua)
-- ARGV: now_ms
-- Returns the dropped request ids.
--@include _queue
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
drop_dead(tonumber(ARGV[1]), '')
return dead
