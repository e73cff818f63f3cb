-- Compare-and-set of node statuses, so that with several replicas sweeping only the one
-- whose call changes a status learns of it (and emits the event): no leader needed; and
-- the router-observed failures behind them.
-- KEYS: node hashes. ARGV[1] mode: 'sweep' (judge silence only), 'fail' (a failure that
-- blames the node of KEYS[1]: it could not be reached), 'fail_model' (model ARGV[6]
-- failed on KEYS[1]: counted for that model, and for the node too when another model
-- failed there within the last ARGV[7] s, since failures across models point at the
-- node), 'ok' (a success of model ARGV[6] on KEYS[1]: clears its failures and the node's);
-- ARGV[2] heartbeat timeout s, ARGV[3] offline s, ARGV[4] failures that make a node
-- degraded, ARGV[5] fleet channel, ARGV[6] model ('' for none), ARGV[7] window s,
-- ARGV[8..] the node ids of KEYS, in order.
-- Fields (shared/keys.py): 'failures' (the node's), 'mfail:<model>' (the model's since its
-- last success there), 'mfail_at:<model>' (Redis time of its last failure).
-- Each changed node's id is published on the fleet channel (replicas re-read that node).
-- Returns a flat list {id, old, new, ...} of the statuses this call changed.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local timeout = tonumber(ARGV[2])
local offline = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])
local model = ARGV[6]
local window = tonumber(ARGV[7])
local changed = {}
for i, key in ipairs(KEYS) do
  local seen = redis.call('HGET', key, 'last_seen')
  if seen then
    if mode == 'fail' then
      redis.call('HINCRBY', key, 'failures', 1)
    elseif mode == 'fail_model' then
      redis.call('HINCRBY', key, 'mfail:' .. model, 1)
      redis.call('HSET', key, 'mfail_at:' .. model, tostring(now))
      local mine = 'mfail_at:' .. model
      for _, name in ipairs(redis.call('HKEYS', key)) do
        if string.sub(name, 1, 9) == 'mfail_at:' and name ~= mine then
          local at = tonumber(redis.call('HGET', key, name)) or 0
          if now - at <= window then
            redis.call('HINCRBY', key, 'failures', 1)
            break
          end
        end
      end
    elseif mode == 'ok' then
      redis.call('HSET', key, 'failures', '0')
      if model ~= '' then
        redis.call('HDEL', key, 'mfail:' .. model, 'mfail_at:' .. model)
      end
    end
    local failures = tonumber(redis.call('HGET', key, 'failures') or '0') or 0
    local silence = now - tonumber(seen)
    local want = 'online'
    if silence >= offline then
      want = 'offline'
    elseif silence >= timeout or failures >= threshold then
      want = 'degraded'
    end
    local old = redis.call('HGET', key, 'status') or ''
    if old ~= want then
      redis.call('HSET', key, 'status', want)
      table.insert(changed, ARGV[7 + i])
      table.insert(changed, old)
      table.insert(changed, want)
    end
    if old ~= want or mode ~= 'sweep' then
      redis.call('PUBLISH', ARGV[5], ARGV[7 + i])
    end
  end
end
return changed
