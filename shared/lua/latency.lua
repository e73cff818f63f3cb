-- Fold one finished request into a node:model's decaying averages (written by routers).
-- KEYS[1] latency:{node}|{model}  hash latency_ms, ttft_ms, tokens_per_s, samples
-- ARGV: latency_ms, ttft_ms, tokens_per_s (0 = not measured), alpha, ttl_seconds
local alpha = tonumber(ARGV[4])
local names = {'latency_ms', 'ttft_ms', 'tokens_per_s'}
for i, name in ipairs(names) do
  local x = tonumber(ARGV[i])
  if x and x > 0 then
    local old = tonumber(redis.call('HGET', KEYS[1], name))
    if old then x = old + alpha * (x - old) end
    redis.call('HSET', KEYS[1], name, tostring(x))
  end
end
redis.call('HINCRBY', KEYS[1], 'samples', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
