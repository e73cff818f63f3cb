-- Zombie reaper for one node:model: expired leases (their replica stopped renewing them)
-- are removed and counted as failed; waiters are told a slot is free.
-- KEYS[1] slots:{node}|{model}  KEYS[2] counters:{node}|{model}
-- ARGV: now_ms, channel, model. Returns the reaped request ids.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'in_flight', -#expired)
  redis.call('HINCRBY', KEYS[2], 'failed', #expired)
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return expired
