-- A request gives up (timeout, cancellation): leave the queue, and drop any lease it took
-- without learning of it (cancelled while the acquire reply was on its way).
-- KEYS[1] wait:{model}  KEYS[2] wait-lease:{model}  KEYS[3] wait-first:{model}
-- KEYS[4 + 2(i-1)], KEYS[5 + 2(i-1)]: slots and counters of candidate i
-- ARGV: id, counters_prefix, model, channel
local id = ARGV[1]
local changed = 0
if redis.call('ZREM', KEYS[1], id) == 1 then
  changed = 1
  redis.call('ZREM', KEYS[2], id)
  local node = redis.call('HGET', KEYS[3], id)
  if node then
    redis.call('HDEL', KEYS[3], id)
    redis.call('HINCRBY', ARGV[2] .. node .. '|' .. ARGV[3], 'pending', -1)
  end
end
for i = 4, #KEYS, 2 do
  if redis.call('ZREM', KEYS[i], id) == 1 then
    changed = 1
    redis.call('HINCRBY', KEYS[i + 1], 'in_flight', -1)
  end
end
-- The head may have been us, holding back others while slots were free.
if changed == 1 and redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return changed
