-- Return a slot: remove the lease, count the outcome, wake the model's waiters.
-- KEYS[1] slots:{node}|{model}  KEYS[2] counters:{node}|{model}  KEYS[3] wait:{model}
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
-- Only when someone waits: a message costs every replica a parse, and a request that
-- arrives after this release finds the free slot itself (acquire runs atomically too).
if redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return removed
