-- Forget the failed outcomes of the given items so they can be processed again (retry).
-- KEYS: job hash, outcomes hash.  ARGV: item ids.  Returns how many were forgotten.
local job, outcomes = KEYS[1], KEYS[2]
local n = 0
for i = 1, #ARGV do
  local line = redis.call('HGET', outcomes, ARGV[i])
  if line then
    local outcome = cjson.decode(line)
    if outcome['status'] == 'failed' then
      redis.call('HDEL', outcomes, ARGV[i])
      redis.call('HINCRBY', job, 'failed', -1)
      redis.call('HINCRBY', job, 'fail:' .. (outcome['error_code'] or 'unknown'), -1)
      n = n + 1
    end
  end
end
if n > 0 then
  redis.call('HSET', job, 'state', 'running')
  redis.call('HDEL', job, 'finished_at', 'report_key', 'stop_reason')
end
return n
