-- Fold a replica's finished requests into a node:model's decaying averages (routers).
-- KEYS[1] latency:{node}|{model}  hash latency_ms, ttft_ms, tokens_per_s, samples
-- ARGV: per figure (latency_ms, ttft_ms, tokens_per_s) three numbers decay, add, first,
--       then samples, ttl_seconds.
-- A replica folds its samples x1..xn (in order, alpha a) into decay = (1-a)^n,
-- add = sum a(1-a)^(n-i) xi and first (the average x1 starts when there is none yet), so
-- old*decay + add is exactly n one-by-one updates. decay >= 1: no sample of that figure.
for i, name in ipairs({'latency_ms', 'ttft_ms', 'tokens_per_s'}) do
  local decay = tonumber(ARGV[3 * i - 2])
  if decay and decay < 1 then
    local old = tonumber(redis.call('HGET', KEYS[1], name))
    local x
    if old then x = old * decay + tonumber(ARGV[3 * i - 1]) else x = tonumber(ARGV[3 * i]) end
    redis.call('HSET', KEYS[1], name, tostring(x))
  end
end
redis.call('HINCRBY', KEYS[1], 'samples', tonumber(ARGV[10]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[11]))
return 1
