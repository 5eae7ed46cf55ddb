-- The task ended: forget its entry, but only if this holder still has it (a redelivery elsewhere
-- may have taken it over).  ARGV[2] = '' releases whoever holds it.
-- KEYS: held hash.  ARGV: task id, holder id.  Returns 1 when an entry was removed.
local line = redis.call('HGET', KEYS[1], ARGV[1])
if not line then return 0 end
if ARGV[2] ~= '' and cjson.decode(line)['holder'] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
