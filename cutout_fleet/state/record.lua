-- Record one item's outcome, at most once (HSETNX on its item id), and move the counters with it.
-- KEYS: job hash, outcomes hash.  ARGV: item id, status, outcome line, now, ttl, error code,
-- safety decision ('' when none).
-- Returns {recorded, completed, stopped}.
local job, outcomes = KEYS[1], KEYS[2]
local item, status, line, now, ttl, code = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local decision = ARGV[7] or ''
if redis.call('EXISTS', job) == 0 then return {0, 0, 0} end
if redis.call('HSETNX', outcomes, item, line) == 0 then return {0, 0, 0} end
redis.call('HINCRBY', job, status, 1)
if status == 'failed' then redis.call('HINCRBY', job, 'fail:' .. code, 1) end
if decision ~= '' then redis.call('HINCRBY', job, 'decision:' .. decision, 1) end
redis.call('HSETNX', job, 'first_outcome_at', now)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', outcomes, ttl)
local f = redis.call('HMGET', job, 'final', 'state', 'total', 'succeeded', 'failed', 'skipped',
                      'guard_min', 'guard_ratio', 'guard_base_processed', 'guard_base_failed')
local succeeded, failed, skipped = tonumber(f[4] or 0), tonumber(f[5] or 0), tonumber(f[6] or 0)
if f[2] ~= 'running' then return {1, 0, 0} end
-- The guard looks at items processed since the last resume, so a fixed cause gets a fresh start.
local processed = succeeded + failed - tonumber(f[9] or 0)
local failed_since = failed - tonumber(f[10] or 0)
local guard_min, guard_ratio = tonumber(f[7] or 0), tonumber(f[8] or 1)
local tripped = guard_min > 0 and processed >= guard_min and failed_since / processed > guard_ratio
if status == 'failed' and tripped then
  -- Name the commonest failure, so the operator can tell a broken setup (access_denied, model_error)
  -- from many bad files listed first (undecodable), which anyone who can write the source can add.
  local top_code, top_count = '', 0
  local fields = redis.call('HGETALL', job)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 5) == 'fail:' and tonumber(fields[i + 1]) > top_count then
      top_code, top_count = string.sub(fields[i], 6), tonumber(fields[i + 1])
    end
  end
  local job_id = string.match(job, '{(.*)}$') or job
  redis.call('HSET', job, 'state', 'stopped', 'stop_reason',
    string.format('failure guard: %d of %d processed items failed (over %d%%), most with %s (%d). ' ..
                  'Fix the cause, then `cutout resume %s`; if these are bad files rather than a ' ..
                  'broken setup, `cutout resume %s --no-guard` finishes the job and reports each one',
                  failed_since, processed, math.floor(guard_ratio * 100), top_code, top_count,
                  job_id, job_id))
  return {1, 0, 1}
end
if f[1] == '1' and succeeded + failed + skipped >= tonumber(f[3] or 0) then
  redis.call('HSET', job, 'state', 'done', 'finished_at', now)
  return {1, 1, 0}
end
return {1, 0, 0}
