-- Revoke an app's client key. Inference stays closed: client_auth is (re)set to its closed
-- value, so revoking the last key never opens the fleet, not even one whose keys predate
-- the setting.
-- KEYS[1] client-keys hash  KEYS[2] client-keys-used hash  KEYS[3] settings hash
-- ARGV: app, the JSON of client_auth's closed value ('"keys"'), the keys channel,
--       the settings channel
-- Returns 1 if the app had a key, 0 if not (nothing changed).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'client_auth', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'client_auth')
return 1
