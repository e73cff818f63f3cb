-- Compare-and-set of node statuses, so that with several replicas sweeping only the one
-- whose call changes a status learns of it (and emits the event): no leader needed.
-- KEYS: node hashes. ARGV[1] mode: 'sweep' (judge silence only), 'fail' (one more
-- router-observed failure on KEYS[1]), 'ok' (a router-observed success on KEYS[1]);
-- ARGV[2] heartbeat timeout s, ARGV[3] offline s, ARGV[4] failures that make a node
-- degraded, ARGV[5] fleet channel, ARGV[6..] the node ids of KEYS, in order.
-- Each changed node's id is published on the fleet channel (replicas re-read that node).
-- Returns a flat list {id, old, new, ...} of the statuses this call changed.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local timeout = tonumber(ARGV[2])
local offline = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])
local changed = {}
for i, key in ipairs(KEYS) do
  local seen = redis.call('HGET', key, 'last_seen')
  if seen then
    local failures_before = redis.call('HGET', key, 'failures') or '0'
    if ARGV[1] == 'fail' then
      redis.call('HINCRBY', key, 'failures', 1)
    elseif ARGV[1] == 'ok' then
      redis.call('HSET', key, 'failures', '0')
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
      table.insert(changed, ARGV[5 + i])
      table.insert(changed, old)
      table.insert(changed, want)
    end
    if old ~= want or tostring(failures) ~= failures_before then
      redis.call('PUBLISH', ARGV[5], ARGV[5 + i])
    end
  end
end
return changed
