-- Take a slot for a request, or queue it fleet-wide, first come first served.
-- KEYS[1] wait:{model}        zset  request id -> arrival order
-- KEYS[2] wait-lease:{model}  zset  request id -> liveness expiry (ms), refreshed by its replica
-- KEYS[3] wait-first:{model}  hash  request id -> node id counted in that node's `pending`
-- KEYS[4] wait-seq            counter giving arrival order
-- KEYS[5] counters-index      set of "node|model"
-- KEYS[6 + 2(i-1)], KEYS[7 + 2(i-1)]: slots and counters of candidate i (best first)
-- ARGV: id, now_ms, lease_ms, max_depth, waiter_ttl_ms, counters_prefix, model, channel,
--       first_try (1|0), then node_i, capacity_i for each candidate.
-- Returns {1, node} when a slot was taken, {0, position, seq} when queued,
-- {-1, depth} when the queue is full.
local id = ARGV[1]
local now = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local max_depth = tonumber(ARGV[4])
local waiter_ttl = tonumber(ARGV[5])
local counters_prefix = ARGV[6]
local model = ARGV[7]
local channel = ARGV[8]
local first_try = ARGV[9] == '1'
local n = (#KEYS - 5) / 2

local function unqueue(w)
  redis.call('ZREM', KEYS[1], w)
  redis.call('ZREM', KEYS[2], w)
  local node = redis.call('HGET', KEYS[3], w)
  if node then
    redis.call('HDEL', KEYS[3], w)
    redis.call('HINCRBY', counters_prefix .. node .. '|' .. model, 'pending', -1)
  end
end

-- Waiters whose replica stopped refreshing them (it died) must not block the queue.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, w in ipairs(dead) do
  if w ~= id then unqueue(w) end
end

-- Live leases have an expiry after now; expired ones are left for the reaper, which
-- fixes the counters and reports them.
local function free_of(i)
  local live = redis.call('ZCOUNT', KEYS[4 + 2 * i], '(' .. now, '+inf')
  return tonumber(ARGV[9 + 2 * i]) - live
end

local my_seq = redis.call('ZSCORE', KEYS[1], id)
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
local blocked = head ~= nil and head ~= id

if not blocked then
  for i = 1, n do
    if free_of(i) > 0 then
      local node = ARGV[8 + 2 * i]
      redis.call('ZADD', KEYS[4 + 2 * i], now + lease_ms, id)
      redis.call('HINCRBY', KEYS[5 + 2 * i], 'in_flight', 1)
      redis.call('SADD', KEYS[5], node .. '|' .. model)
      if my_seq then unqueue(id) end
      -- Pass the wake-up on: the next waiter may fit in what is still free.
      if redis.call('ZCARD', KEYS[1]) > 0 then
        for j = 1, n do
          if free_of(j) > 0 then
            redis.call('PUBLISH', channel, model)
            break
          end
        end
      end
      return {1, node}
    end
  end
end

if not my_seq then
  local depth = redis.call('ZCARD', KEYS[1])
  if depth >= max_depth then return {-1, depth} end
  my_seq = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[1], my_seq, id)
  redis.call('ZADD', KEYS[2], now + waiter_ttl, id)
  if n > 0 then
    local first = ARGV[10]
    redis.call('HSET', KEYS[3], id, first)
    redis.call('HINCRBY', KEYS[7], 'pending', 1)
    redis.call('SADD', KEYS[5], first .. '|' .. model)
  end
  -- A newcomer queued behind others while a slot is free: make sure the head hears of it
  -- (the slot may have been freed by expiry, which publishes nothing).
  if blocked and first_try then
    for j = 1, n do
      if free_of(j) > 0 then
        redis.call('PUBLISH', channel, model)
        break
      end
    end
  end
else
  redis.call('ZADD', KEYS[2], 'XX', now + waiter_ttl, id)
end
return {0, redis.call('ZRANK', KEYS[1], id), tostring(my_seq)}
