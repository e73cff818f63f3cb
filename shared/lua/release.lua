-- Return a slot: remove the lease, count the outcome, and give the slot to the first live
-- waiter that can use the node.
-- KEYS[1..12] the queue of the model (see _queue.lua)
-- KEYS[13] slots:{node}|{model}  KEYS[14] counters:{node}|{model}
-- ARGV: id, ok (1 done | 0 failed), now_ms, node, model
-- Returns 1 if the lease was held, 0 if it had already been reaped (counted then).
--@include _queue
local removed = redis.call('ZREM', KEYS[13], ARGV[1])
if removed == 1 then
  redis.call('HINCRBY', KEYS[14], 'in_flight', -1)
  if ARGV[2] == '1' then
    redis.call('HINCRBY', KEYS[14], 'done', 1)
  else
    redis.call('HINCRBY', KEYS[14], 'failed', 1)
  end
end
-- Only when someone waits: with an empty queue a release costs what it always did.
if redis.call('ZCARD', KEYS[1]) > 0 then
  local now = tonumber(ARGV[3])
  drop_dead(now, '')
  settle(ARGV[4], 13, now, ARGV[5], '')
end
return removed
