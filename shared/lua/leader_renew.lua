-- Extend the leader lock only if this replica still holds it.
-- KEYS[1] leader  ARGV: replica id, ttl_ms. Returns 1 if extended, 0 if lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
