-- The fleet-wide queue's books, shared by acquire.lua, leave.lua and reap_waiters.lua
-- (shared/scripts.py pastes this file in where a script has an include line for it).
-- Each of those scripts takes the queue's keys first, in this order (Keys.queue):
-- KEYS[1] wait:{model}          zset  request id -> fair order (band * BAND + virtual tag)
-- KEYS[2] wait-lease:{model}    zset  request id -> liveness expiry (ms), refreshed by its replica
-- KEYS[3] wait-first:{model}    hash  request id -> its first-choice node
-- KEYS[4] wait-pending:{model}  hash  node -> waiters whose first choice it is
-- KEYS[5] wait-app:{model}      hash  request id -> app
-- KEYS[6] wait-apps:{model}     hash  app -> how many of its requests wait
-- KEYS[7] wait-fair:{model}     hash  app -> virtual finish tag of its newest waiter;
--                                     field '' -> the queue's virtual clock
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
    redis.call('DEL', KEYS[7]) -- an empty queue starts its clock afresh: tags stay small
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
