-- Take the tasks of holders whose last heartbeat is older than the lease (or that never beat),
-- and forget those holders: one atomic step, so two recovery passes never take the same task.
-- KEYS: workers zset, held hash.  ARGV: lease seconds.  Returns the taken entries (JSON).
-- Redis 5 and 6 need effects replication before a write that follows TIME (7 always does it).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1e6 - tonumber(ARGV[1])
local taken = {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', 500)
  cursor = page[1]
  for i = 1, #page[2], 2 do
    local entry = cjson.decode(page[2][i + 1])
    local beat = redis.call('ZSCORE', KEYS[1], entry['holder'])
    if (not beat or tonumber(beat) < cutoff) and entry['since'] < cutoff then
      redis.call('HDEL', KEYS[2], page[2][i])
      entry['task_id'] = page[2][i]
      entry['last_beat'] = beat and tonumber(beat) or cjson.null
      table.insert(taken, cjson.encode(entry))
    end
  end
until cursor == '0'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
return taken
