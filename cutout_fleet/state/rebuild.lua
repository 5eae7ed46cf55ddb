-- Recount from per-item state (the outcomes and claims hashes): after a Redis restart whose AOF lost
-- its last second, or whenever the counters are in doubt.
-- KEYS: job hash, outcomes hash, claims hash.  Returns 0 when the job does not exist.
local job, outcomes, claims = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', job) == 0 then return 0 end
local counts = {succeeded = 0, failed = 0, skipped = 0}
local fails, collisions = {}, 0
local cursor = '0'
repeat
  local page = redis.call('HSCAN', outcomes, cursor, 'COUNT', 1000)
  cursor = page[1]
  for i = 2, #page[2], 2 do
    local outcome = cjson.decode(page[2][i])
    counts[outcome['status']] = counts[outcome['status']] + 1
    if outcome['status'] == 'failed' then
      local code = outcome['error_code'] or 'unknown'
      fails[code] = (fails[code] or 0) + 1
      -- A collision's item owns no claim (the output belongs to another item), yet it is an item.
      if code == 'output_collision' then collisions = collisions + 1 end
    end
  end
until cursor == '0'
for _, field in ipairs(redis.call('HKEYS', job)) do
  if string.sub(field, 1, 5) == 'fail:' then redis.call('HDEL', job, field) end
end
for code, n in pairs(fails) do redis.call('HSET', job, 'fail:' .. code, n) end
local total = redis.call('HLEN', claims) + collisions
redis.call('HSET', job, 'succeeded', counts['succeeded'], 'failed', counts['failed'],
           'skipped', counts['skipped'])
redis.call('HSET', job, 'total', total)
return 1
