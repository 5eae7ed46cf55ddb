-- The attempt is counted only for a running job and an item without an outcome: before the work, in
-- Redis, so a worker killed by this very item still leaves a trace.
-- KEYS: job hash, outcomes hash, attempts hash.  ARGV: item id, ttl.  Returns {state, recorded, attempt}.
local job, outcomes, attempts = KEYS[1], KEYS[2], KEYS[3]
local item, ttl = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HGET', job, 'state')
if not state then return {false, 0, 0} end
if redis.call('HEXISTS', outcomes, item) == 1 then return {state, 1, 0} end
if state ~= 'running' then return {state, 0, 0} end
local attempt = redis.call('HINCRBY', attempts, item, 1)
redis.call('EXPIRE', attempts, ttl)
return {state, 0, attempt}
