-- Take a slot for a request, or queue it fleet-wide in weighted fair order.
-- KEYS[1..12] the queue of the model (see _queue.lua)
-- KEYS[13 + 2(i-1)], KEYS[14 + 2(i-1)]: slots and counters of candidate i
-- ARGV: id, now_ms, lease_ms, max_depth, waiter_ttl_ms, model, channel (this replica's
--       grant channel), app, band (0 high | 1 normal | 2 low), cost (1 / the app's weight),
--       session ('' for none), affinity bonus, affinity ttl_ms, affinity max entries,
--       again (0 on a request's first call | 1 when it calls again),
--       then node_i, capacity_i, score_i, busy_i, freed_i for each candidate (best first):
--       busy_i the requests in flight on it for the model as the replica's view had them
--       (read up to half a second ago), freed_i the points its score gains per one fewer.
-- Returns {1, node, remembered} when the request holds a slot, {0, position, order,
-- remembered} when it waits (order: its score in wait:{model}), {-1, depth} when the queue
-- is full. remembered: the node that took the conversation's last turn, or ''.
--
-- Nobody waits: the first candidate with room is taken at once (the hot path). Otherwise
-- the request takes (or keeps) its place in the fair order, stores its candidates, and every
-- candidate node is settled: its free slots go to the waiters in order, which may be this
-- request or an older one (whose replica is told on its grant channel).
--@include _queue
local id = ARGV[1]
local now = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local max_depth = tonumber(ARGV[4])
local waiter_ttl = tonumber(ARGV[5])
local model = ARGV[6]
local channel = ARGV[7]
local app = ARGV[8]
local band = tonumber(ARGV[9])
local cost = tonumber(ARGV[10])
local session = ARGV[11]
local bonus = tonumber(ARGV[12])
local affinity_ttl = tonumber(ARGV[13])
local affinity_max = tonumber(ARGV[14])
local again = ARGV[15] == '1'
local n = (#KEYS - 12) / 2
local function node_of(i) return ARGV[11 + 5 * i] end
local function capacity_of(i) return tonumber(ARGV[12 + 5 * i]) end
local function score_of(i) return tonumber(ARGV[13 + 5 * i]) end
local function slots_of(i) return 11 + 2 * i end -- index in KEYS; counters follow it

-- Called again: a slot may have been granted to it meanwhile (the message is on its way or
-- was lost). It is this request's: hold it a full lease from now.
if again then
  for i = 1, n do
    if redis.call('ZSCORE', KEYS[slots_of(i)], id) then
      redis.call('ZADD', KEYS[slots_of(i)], 'XX', now + lease_ms, id)
      local remembered = recall(session, now, affinity_ttl)
      return {1, node_of(i), remembered or ''}
    end
  end
end

drop_dead(now, id)

-- The conversation's last node, if it was used within the ttl: it moves ahead of every
-- candidate whose score is below its own plus the affinity bonus (load still wins). Its
-- score is first corrected to its live leases: the replica's view may still count requests
-- that have ended since, most often this conversation's own last turn, just answered.
local remembered, used = recall(session, now, affinity_ttl)
local order = {}
for i = 1, n do order[i] = i end
if remembered then
  for r = 2, n do
    if node_of(r) == remembered then
      local ended = tonumber(ARGV[14 + 5 * r])
        - redis.call('ZCOUNT', KEYS[slots_of(r)], '(' .. now, '+inf')
      local boosted = score_of(r) + math.max(ended, 0) * tonumber(ARGV[15 + 5 * r]) + bonus
      local at = r
      while at > 1 and score_of(order[at - 1]) < boosted do at = at - 1 end
      table.remove(order, r)
      table.insert(order, at, r)
      break
    end
  end
end

local function take(i)
  local node = node_of(i)
  redis.call('ZADD', KEYS[slots_of(i)], now + lease_ms, id)
  redis.call('HINCRBY', KEYS[slots_of(i) + 1], 'in_flight', 1)
  redis.call('SADD', KEYS[10], node .. '|' .. model)
  remember(session, node, now, affinity_ttl, affinity_max, remembered, used)
  return {1, node, remembered or ''}
end

local my_score = redis.call('ZSCORE', KEYS[1], id)
if not my_score and redis.call('ZCARD', KEYS[1]) == 0 then
  -- Nobody waits: the first candidate with room, in order. Live leases have an expiry
  -- after now; expired ones are left for the reaper, which fixes the counters.
  for _, i in ipairs(order) do
    local live = redis.call('ZCOUNT', KEYS[slots_of(i)], '(' .. now, '+inf')
    if capacity_of(i) - live > 0 then return take(i) end
  end
end

-- A place in the fair order: the app's newest tag (or the clock, if that is later) plus
-- its cost, so each waiting app gets freed slots in proportion to its weight, and its own
-- requests stay first come, first served within a band.
local settle_all = true
if not my_score then
  local depth = redis.call('ZCARD', KEYS[1])
  if depth >= max_depth then return {-1, depth} end
  -- An empty queue, and no candidate had room (just counted): nothing to settle.
  settle_all = depth > 0
  local clock = tonumber(redis.call('HGET', KEYS[7], '') or '0')
  local last = tonumber(redis.call('HGET', KEYS[7], app) or '0')
  local tag = math.max(clock, last) + cost
  my_score = fmt(band * BAND + tag)
  redis.call('HSET', KEYS[7], app, fmt(tag))
  redis.call('ZADD', KEYS[1], my_score, id)
  redis.call('ZADD', KEYS[2], now + waiter_ttl, id)
  redis.call('HSET', KEYS[5], id, app)
  redis.call('HINCRBY', KEYS[6], app, 1)
  local first = node_of(order[1])
  redis.call('HSET', KEYS[3], id, first)
  redis.call('HINCRBY', KEYS[4], first, 1)
  redis.call('SADD', KEYS[10], first .. '|' .. model)
else
  redis.call('ZADD', KEYS[2], 'XX', now + waiter_ttl, id)
end

-- What settle needs to grant it a slot later, and the capacities it was given (a wider
-- list from a second call replaces the first).
local nodes, caps = {}, {}
for k, i in ipairs(order) do
  nodes[k] = node_of(i)
  caps[#caps + 1] = node_of(i)
  caps[#caps + 1] = ARGV[12 + 5 * i]
end
redis.call('HSET', KEYS[8], id, cjson.encode({
  c = nodes, s = session, o = channel, l = lease_ms, t = affinity_ttl, m = affinity_max}))
redis.call('HSET', KEYS[9], unpack(caps))

if settle_all then
  for _, i in ipairs(order) do
    local mine = settle(node_of(i), slots_of(i), now, model, id)
    if mine then return {1, node_of(i), mine} end
  end
end
return {0, redis.call('ZRANK', KEYS[1], id), my_score, remembered or ''}
