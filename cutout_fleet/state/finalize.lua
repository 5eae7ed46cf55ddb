-- Mark the total final (or re-check after a resume); completes the job when nothing is left.
-- KEYS: job hash.  ARGV: now.  Returns 1 when this call completed the job.
local job, now = KEYS[1], ARGV[1]
if redis.call('EXISTS', job) == 0 then return 0 end
redis.call('HSET', job, 'final', '1')
local f = redis.call('HMGET', job, 'state', 'total', 'succeeded', 'failed', 'skipped')
local finished = tonumber(f[3] or 0) + tonumber(f[4] or 0) + tonumber(f[5] or 0)
if f[1] == 'running' and finished >= tonumber(f[2] or 0) then
  redis.call('HSET', job, 'state', 'done', 'finished_at', now)
  return 1
end
return 0
