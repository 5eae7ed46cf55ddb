-- A task is held by a worker process: written when it starts (or is scheduled for a retry), so a
-- redelivery of the same task id elsewhere takes the entry over.
-- KEYS: held hash.  ARGV: task id, entry JSON without `since`.  Returns the server time.
-- Redis 5 and 6 need effects replication before a write that follows TIME (7 always does it).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local entry = cjson.decode(ARGV[2])
entry['since'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
return tostring(now)
