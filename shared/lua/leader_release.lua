-- Give up the leader lock only if this replica holds it.
-- KEYS[1] leader  ARGV: replica id. Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
