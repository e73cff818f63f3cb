-- Take a slot for a request, or queue it fleet-wide in weighted fair order.
-- KEYS[1..7] the queue of the model (see _queue.lua)
-- KEYS[8]  counters-index   set   "node|model" pairs that have counters
-- KEYS[9]  affinity         zset  conversation key -> last use (ms)
-- KEYS[10] affinity-node    hash  conversation key -> node that took its last turn
-- KEYS[11 + 2(i-1)], KEYS[12 + 2(i-1)]: slots and counters of candidate i
-- ARGV: id, now_ms, lease_ms, max_depth, waiter_ttl_ms, model, channel,
--       app, band (0 high | 1 normal | 2 low), cost (1 / the app's weight),
--       session ('' for none), affinity bonus, affinity ttl_ms, affinity max entries,
--       then node_i, capacity_i, score_i for each candidate (best first).
-- Returns {1, node, remembered} when a slot was taken, {0, position, order, remembered}
-- when queued (order: its score in wait:{model}), {-1, depth} when the queue is full.
-- remembered: the node that took the conversation's last turn, or ''.
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
local n = (#KEYS - 10) / 2

-- Waiters whose replica stopped refreshing them (it died) must not block the queue.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, w in ipairs(dead) do
  if w ~= id and not unqueue(w, false) then redis.call('ZREM', KEYS[2], w) end
end

-- Live leases have an expiry after now; expired ones are left for the reaper, which
-- fixes the counters and reports them.
local function free_of(i)
  local live = redis.call('ZCOUNT', KEYS[9 + 2 * i], '(' .. now, '+inf')
  return tonumber(ARGV[13 + 3 * i]) - live
end
local function any_free()
  for j = 1, n do
    if free_of(j) > 0 then return true end
  end
  return false
end

-- The conversation's last node, if it was used within the ttl: it moves ahead of every
-- candidate whose score is below its own plus the affinity bonus (load still wins).
local remembered = false
local used = 0
local order = {}
for i = 1, n do order[i] = i end
if session ~= '' then
  remembered = redis.call('HGET', KEYS[10], session)
  if remembered then
    used = tonumber(redis.call('ZSCORE', KEYS[9], session) or '0')
    if used < now - affinity_ttl then remembered = false end
  end
  if remembered then
    for r = 2, n do
      if ARGV[12 + 3 * r] == remembered then
        local boosted = tonumber(ARGV[14 + 3 * r]) + bonus
        local at = r
        while at > 1 and tonumber(ARGV[14 + 3 * order[at - 1]]) < boosted do at = at - 1 end
        table.remove(order, r)
        table.insert(order, at, r)
        break
      end
    end
  end
end

local function remember(node)
  if session == '' then return end
  -- A hit remembered recently needs no write: the index is least-recently-used to within
  -- a sixteenth of the ttl, and a busy conversation costs two reads per turn, not eight.
  if remembered == node and used > now - affinity_ttl / 16 then return end
  redis.call('ZADD', KEYS[9], now, session)
  redis.call('HSET', KEYS[10], session, node)
  -- Bounded and expiring: drop a few of the stale and the oldest beyond the cap on each
  -- write, and let the whole index lapse when no conversation used it for a ttl.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', now - affinity_ttl, 'LIMIT', 0, 16)
  local over = redis.call('ZCARD', KEYS[9]) - #gone - affinity_max
  if over > 0 then
    for _, s in ipairs(redis.call('ZRANGE', KEYS[9], #gone, #gone + math.min(over, 16) - 1)) do
      gone[#gone + 1] = s
    end
  end
  if #gone > 0 then
    redis.call('ZREM', KEYS[9], unpack(gone))
    redis.call('HDEL', KEYS[10], unpack(gone))
  end
  redis.call('PEXPIRE', KEYS[9], affinity_ttl)
  redis.call('PEXPIRE', KEYS[10], affinity_ttl)
end

-- A place in the fair order: the app's newest tag (or the clock, if that is later) plus
-- its cost, so each waiting app gets freed slots in proportion to its weight, and its own
-- requests stay first come, first served within a band.
local function enqueue()
  local depth = redis.call('ZCARD', KEYS[1])
  if depth >= max_depth then return nil, depth end
  local clock = tonumber(redis.call('HGET', KEYS[7], '') or '0')
  local last = tonumber(redis.call('HGET', KEYS[7], app) or '0')
  local tag = math.max(clock, last) + cost
  local score = fmt(band * BAND + tag)
  redis.call('HSET', KEYS[7], app, fmt(tag))
  redis.call('ZADD', KEYS[1], score, id)
  redis.call('ZADD', KEYS[2], now + waiter_ttl, id)
  redis.call('HSET', KEYS[5], id, app)
  redis.call('HINCRBY', KEYS[6], app, 1)
  if n > 0 then
    local first = ARGV[12 + 3 * order[1]]
    redis.call('HSET', KEYS[3], id, first)
    redis.call('HINCRBY', KEYS[4], first, 1)
    redis.call('SADD', KEYS[8], first .. '|' .. model)
  end
  return score, depth
end

local my_score = redis.call('ZSCORE', KEYS[1], id)
local queued_now = false
if not my_score and redis.call('ZCARD', KEYS[1]) > 0 then
  -- Others wait: take a place in the fair order first; it may be at the head.
  local depth
  my_score, depth = enqueue()
  if not my_score then return {-1, depth} end
  queued_now = true
end

local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if head == nil or head == id then
  for _, i in ipairs(order) do
    if free_of(i) > 0 then
      local node = ARGV[12 + 3 * i]
      redis.call('ZADD', KEYS[9 + 2 * i], now + lease_ms, id)
      redis.call('HINCRBY', KEYS[10 + 2 * i], 'in_flight', 1)
      redis.call('SADD', KEYS[8], node .. '|' .. model)
      if my_score then unqueue(id, true) end
      -- Pass the wake-up on: the next waiter may fit in what is still free.
      if redis.call('ZCARD', KEYS[1]) > 0 and any_free() then
        redis.call('PUBLISH', channel, model)
      end
      remember(node)
      return {1, node, remembered or ''}
    end
  end
end

if not my_score then
  local depth
  my_score, depth = enqueue()
  if not my_score then return {-1, depth} end
  queued_now = true
elseif not queued_now then
  redis.call('ZADD', KEYS[2], 'XX', now + waiter_ttl, id)
end
-- A newcomer queued behind others while a slot is free: make sure the head hears of it
-- (the slot may have been freed by expiry, which publishes nothing).
if queued_now and head ~= nil and head ~= id and any_free() then
  redis.call('PUBLISH', channel, model)
end
return {0, redis.call('ZRANK', KEYS[1], id), my_score, remembered or ''}
