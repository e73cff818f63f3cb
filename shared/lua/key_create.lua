-- Store a new client key, and close inference to requests without a credential, at once:
-- no replica can see the key while the fleet's client_auth still says open.
-- KEYS[1] client-keys hash  KEYS[2] settings hash
-- ARGV: app, the key's record (JSON), the JSON of client_auth's closed value ('"keys"'),
--       the keys channel, the settings channel
-- Returns 1 if created, 0 if the app already has a key (nothing changed).
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'client_auth', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], 'client_auth')
return 1
