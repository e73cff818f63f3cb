-- One heartbeat, atomically: store the node's state, mark it seen (Redis clock, so every
-- replica judges silence by the same time), and report the status change it caused.
-- KEYS[1] node hash, KEYS[2] set of node ids, KEYS[3] liveness key
-- ARGV[1] node id, ARGV[2] state JSON ('' = keep the stored one: a draining-only beat),
-- ARGV[3] draining '1'|'0', ARGV[4] '1' when the beat is good (Ollama up: clears the
-- router-observed failures), ARGV[5] failures that make a node degraded,
-- ARGV[6] liveness TTL ms, ARGV[7] node hash TTL s, ARGV[8] fleet channel
-- Returns {old status or '', new status, now}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local old = redis.call('HGET', KEYS[1], 'status') or ''
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
end
redis.call('HSET', KEYS[1], 'last_seen', tostring(now), 'draining', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'failures', '0')
end
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') or 0
local new = 'online'
if failures >= tonumber(ARGV[5]) then
  new = 'degraded'
end
redis.call('HSET', KEYS[1], 'status', new)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[6]))
redis.call('PUBLISH', ARGV[8], ARGV[1])
return {old, new, tostring(now)}
