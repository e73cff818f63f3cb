-- A request gives up (timeout, cancellation): leave the queue, and drop any lease it took
-- without learning of it (cancelled while the acquire reply was on its way).
-- KEYS[1..7] the queue of the model (see _queue.lua)
-- KEYS[8 + 2(i-1)], KEYS[9 + 2(i-1)]: slots and counters of candidate i
-- ARGV: id, model, channel
-- Returns 1 if the request waited or held a lease, else 0.
--@include _queue
local id = ARGV[1]
local changed = 0
if unqueue(id, false) then changed = 1 end
for i = 8, #KEYS, 2 do
  if redis.call('ZREM', KEYS[i], id) == 1 then
    changed = 1
    redis.call('HINCRBY', KEYS[i + 1], 'in_flight', -1)
  end
end
-- The head may have been us, holding back others while slots were free.
if changed == 1 and redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return changed
