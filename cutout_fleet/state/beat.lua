-- A heartbeat: the holder is alive now.  Server time, so machines with skewed clocks agree.
-- KEYS: workers zset.  ARGV: holder id.  Returns the server time (seconds).
-- Redis 5 and 6 need effects replication before a write that follows TIME (7 always does it).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now, ARGV[1])
return tostring(now)
