-- Zombie reaper for one node:model: expired leases (their replica stopped renewing them)
-- are removed and counted as failed, and the node's free slots go to the waiters that can
-- use it (also when nothing expired: a pass every few seconds settles every node again).
-- KEYS[1..12] the queue of the model (see _queue.lua)
-- KEYS[13] slots:{node}|{model}  KEYS[14] counters:{node}|{model}
-- ARGV: now_ms, node, model. Returns the reaped request ids.
--@include _queue
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[13], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now)
  redis.call('HINCRBY', KEYS[14], 'in_flight', -#expired)
  redis.call('HINCRBY', KEYS[14], 'failed', #expired)
end
if redis.call('ZCARD', KEYS[1]) > 0 then
  drop_dead(now, '')
  settle(ARGV[2], 13, now, ARGV[3], '')
end
return expired
