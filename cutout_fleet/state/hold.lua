-- A task is held by a worker process: written when it starts (or is scheduled for a retry), so a
-- redelivery of the same task id elsewhere takes the entry over.
-- KEYS: held hash.  ARGV: task id, entry JSON without `since`.  Returns the server time.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local entry = cjson.decode(ARGV[2])
entry['since'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
return tostring(now)
