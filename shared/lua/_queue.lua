-- The fleet-wide queue's books and who gets a freed slot, shared by acquire.lua,
-- release.lua, leave.lua, reap.lua and reap_waiters.lua (shared/scripts.py pastes this file
-- in where a script has an include line for it). Each of those scripts takes the queue's
-- keys first, in this order (Keys.queue):
-- KEYS[1]  wait:{model}          zset  request id -> fair order (band * BAND + virtual tag)
-- KEYS[2]  wait-lease:{model}    zset  request id -> liveness expiry (ms), refreshed by its replica
-- KEYS[3]  wait-first:{model}    hash  request id -> its first-choice node
-- KEYS[4]  wait-pending:{model}  hash  node -> waiters whose first choice it is
-- KEYS[5]  wait-app:{model}      hash  request id -> app
-- KEYS[6]  wait-apps:{model}     hash  app -> how many of its requests wait
-- KEYS[7]  wait-fair:{model}     hash  app -> virtual finish tag of its newest waiter;
--                                      field '' -> the queue's virtual clock
-- KEYS[8]  wait-nodes:{model}    hash  request id -> JSON {c: its candidate nodes in order,
--                                      s: conversation key, o: its replica's grant channel,
--                                      l: lease ms, t: conversation ttl ms, m: index cap}
-- KEYS[9]  wait-cap:{model}      hash  node -> its slots for the model, as the newest request
--                                      that queued for it said
-- KEYS[10] counters-index        set   "node|model" pairs that have counters
-- KEYS[11] affinity              zset  conversation key -> last use (ms)
-- KEYS[12] affinity-node         hash  conversation key -> node that took its last turn
local BAND = 17592186044416 -- 2^44: one priority band; tags stay far below it

local function fmt(x)
  -- Redis 6.2 turns a Lua number into a string with too few digits for a score.
  return string.format('%.17g', x)
end

-- Remove waiter w and its books. served: it took a slot, so the virtual clock moves on to
-- its tag (high-priority requests, band 0, leave the clock alone). Returns true if w waited.
local function unqueue(w, served)
  local score = redis.call('ZSCORE', KEYS[1], w)
  if not score then return false end
  redis.call('ZREM', KEYS[1], w)
  redis.call('ZREM', KEYS[2], w)
  redis.call('HDEL', KEYS[8], w)
  local node = redis.call('HGET', KEYS[3], w)
  if node then
    redis.call('HDEL', KEYS[3], w)
    if redis.call('HINCRBY', KEYS[4], node, -1) <= 0 then redis.call('HDEL', KEYS[4], node) end
  end
  local app = redis.call('HGET', KEYS[5], w)
  if app then
    redis.call('HDEL', KEYS[5], w)
    if redis.call('HINCRBY', KEYS[6], app, -1) <= 0 then
      redis.call('HDEL', KEYS[6], app)
      -- Nothing of this app waits: it carries no backlog into its next request.
      redis.call('HDEL', KEYS[7], app)
    end
  end
  if redis.call('ZCARD', KEYS[1]) == 0 then
    -- An empty queue starts its clock afresh (tags stay small) and forgets capacities.
    redis.call('DEL', KEYS[7], KEYS[9])
  elseif served then
    score = tonumber(score)
    if score >= BAND then
      local tag = score % BAND
      local clock = tonumber(redis.call('HGET', KEYS[7], '') or '0')
      if tag > clock then redis.call('HSET', KEYS[7], '', fmt(tag)) end
    end
  end
  return true
end

-- Waiters whose replica stopped refreshing them (it died) leave the queue unserved.
local function drop_dead(now, keep)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    if w ~= keep and not unqueue(w, false) then redis.call('ZREM', KEYS[2], w) end
  end
end

-- The node that took the conversation's last turn if that was within ttl (else false),
-- and when it was.
local function recall(session, now, ttl)
  if session == '' then return false, 0 end
  local node = redis.call('HGET', KEYS[12], session)
  if not node then return false, 0 end
  local used = tonumber(redis.call('ZSCORE', KEYS[11], session) or '0')
  if used < now - ttl then return false, used end
  return node, used
end

-- The conversation's turn went to node: remember it (bounded, expiring).
local function remember(session, node, now, ttl, cap, remembered, used)
  if session == '' then return end
  -- A hit remembered recently needs no write: the index is least-recently-used to within
  -- a sixteenth of the ttl, and a busy conversation costs two reads per turn, not eight.
  if remembered == node and used > now - ttl / 16 then return end
  redis.call('ZADD', KEYS[11], now, session)
  redis.call('HSET', KEYS[12], session, node)
  -- Bounded and expiring: drop a few of the stale and the oldest beyond the cap on each
  -- write, and let the whole index lapse when no conversation used it for a ttl.
  local gone = redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now - ttl, 'LIMIT', 0, 16)
  local over = redis.call('ZCARD', KEYS[11]) - #gone - cap
  if over > 0 then
    for _, s in ipairs(redis.call('ZRANGE', KEYS[11], #gone, #gone + math.min(over, 16) - 1)) do
      gone[#gone + 1] = s
    end
  end
  if #gone > 0 then
    redis.call('ZREM', KEYS[11], unpack(gone))
    redis.call('HDEL', KEYS[12], unpack(gone))
  end
  redis.call('PEXPIRE', KEYS[11], ttl)
  redis.call('PEXPIRE', KEYS[12], ttl)
end

-- How a stored waiter (its JSON) lists a node. In JSON, '[' or ',' followed by an
-- unescaped quote opens an array element (a quote inside a string is always escaped), and
-- the record's only array is its candidates: a plain search needs no decoding.
local function marks(node)
  local enc = cjson.encode(node)
  return {'[' .. enc .. ',', '[' .. enc .. ']', ',' .. enc .. ',', ',' .. enc .. ']'}
end

local function lists(record, m)
  return string.find(record, m[1], 1, true) or string.find(record, m[2], 1, true)
    or string.find(record, m[3], 1, true) or string.find(record, m[4], 1, true)
end

-- Give the node's free slots to the live waiters that can use it, in the queue's order.
-- KEYS[si], KEYS[si + 1]: the node's slots and counters. Call drop_dead first. Each waiter
-- granted gets its lease, leaves the queue (the clock moves) and has its conversation
-- remembered; its replica hears of it on its grant channel, except `caller` (the script's
-- own request), for which the remembered node ('' for none) is returned, else nil.
-- A capacity of 0 (a node that stopped serving the model) gives nothing.
local function settle(node, si, now, model, caller)
  local cap = redis.call('HGET', KEYS[9], node)
  if not cap then return nil end -- no waiter lists the node
  cap = tonumber(cap)
  local live = redis.call('ZCOUNT', KEYS[si], '(' .. now, '+inf')
  local m = marks(node)
  local mine = nil
  local start, chunk = 0, 4 -- the head usually fits: read a few first, then more
  while live < cap do
    local ids = redis.call('ZRANGE', KEYS[1], start, start + chunk - 1)
    if #ids == 0 then
      -- Nobody left waits for this node: the next release there costs one read.
      redis.call('HDEL', KEYS[9], node)
      break
    end
    local records = redis.call('HMGET', KEYS[8], unpack(ids))
    local taken = 0
    for k = 1, #ids do
      local w, record = ids[k], records[k]
      if record and lists(record, m) then
        local r = cjson.decode(record)
        local expiry = now + r.l
        if w ~= caller then
          -- Its replica may have died since it last refreshed the waiter: the slot is held
          -- only while the waiter would still look alive (at least a second, time for the
          -- replica to hear of it), and a live replica extends it to a full lease at once.
          local alive = tonumber(redis.call('ZSCORE', KEYS[2], w) or '0')
          expiry = math.min(expiry, math.max(alive, now + 1000))
        end
        redis.call('ZADD', KEYS[si], expiry, w)
        redis.call('HINCRBY', KEYS[si + 1], 'in_flight', 1)
        redis.call('SADD', KEYS[10], node .. '|' .. model)
        unqueue(w, true)
        local remembered, used = recall(r.s, now, r.t)
        remember(r.s, node, now, r.t, r.m, remembered, used)
        if w == caller then
          mine = remembered or ''
        else
          redis.call('PUBLISH', r.o, cjson.encode({w, node, remembered or ''}))
        end
        taken = taken + 1
        live = live + 1
        if live >= cap then break end
      end
    end
    start = start + #ids - taken
    chunk = math.min(chunk * 4, 64)
  end
  return mine
end
