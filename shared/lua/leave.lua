-- A request gives up (timeout, cancellation): leave the queue, and return any lease it was
-- granted without learning of it (cancelled while the grant was on its way), giving that
-- slot to the next waiter that can use it.
-- KEYS[1..12] the queue of the model (see _queue.lua)
-- KEYS[13 + 2(i-1)], KEYS[14 + 2(i-1)]: slots and counters of candidate i
-- ARGV: id, now_ms, model, then node_i for each candidate
-- Returns 1 if the request waited or held a lease, else 0.
--@include _queue
local id = ARGV[1]
local now = tonumber(ARGV[2])
local changed = 0
if unqueue(id, false) then changed = 1 end
local freed = {}
for i = 13, #KEYS, 2 do
  if redis.call('ZREM', KEYS[i], id) == 1 then
    changed = 1
    redis.call('HINCRBY', KEYS[i + 1], 'in_flight', -1)
    freed[#freed + 1] = i
  end
end
-- A waiter leaving frees nothing: only a returned lease has a slot to give.
if #freed > 0 and redis.call('ZCARD', KEYS[1]) > 0 then
  drop_dead(now, '')
  for _, i in ipairs(freed) do settle(ARGV[4 + (i - 13) / 2], i, now, ARGV[3], '') end
end
return changed
