-- Store runtime setting overrides and announce them, unless they open inference while a
-- client key exists: client_auth may be open only with no key stored (key_create.lua
-- closes it in the same step as it stores a key), so the two never disagree.
-- KEYS[1] settings hash  KEYS[2] client-keys hash
-- ARGV: '1' if the changes set client_auth to open else '0', the settings channel, the
--       message (the changed names), then field, JSON value pairs
-- Returns 0 when stored, else the number of client keys (and nothing is stored).
if ARGV[1] == '1' then
  local held = redis.call('HLEN', KEYS[2])
  if held > 0 then
    return held
  end
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
