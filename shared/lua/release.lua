-- Return a slot: remove the lease, count the outcome, wake the model's waiters.
-- KEYS[1] slots:{node}|{model}  KEYS[2] counters:{node}|{model}
-- ARGV: id, ok (1 done | 0 failed), channel, model
-- Returns 1 if the lease was held, 0 if it had already been reaped (counted then).
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('HINCRBY', KEYS[2], 'in_flight', -1)
  if ARGV[2] == '1' then
    redis.call('HINCRBY', KEYS[2], 'done', 1)
  else
    redis.call('HINCRBY', KEYS[2], 'failed', 1)
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return removed
