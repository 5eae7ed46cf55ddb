-- Claim each output key for the item that makes it, and count the job's new items.
-- KEYS: claims hash, job hash.  ARGV: ttl, ignored, then (output key, item id) pairs.
-- Returns {index, owner} for each output already claimed (AGAIN when the owner is the same item).
local claims, job = KEYS[1], KEYS[2]
local losers = {}
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', claims, ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
  else
    local owner = redis.call('HGET', claims, ARGV[i])
    if owner ~= ARGV[i + 1] then added = added + 1 end  -- a collision is an item of the job too
    losers[#losers + 1] = (i - 1) / 2
    losers[#losers + 1] = owner
  end
end
-- Counted in the same script as the claims: a call retried after a dropped reply adds nothing twice.
redis.call('HINCRBY', job, 'total', added)
redis.call('HINCRBY', job, 'ignored', tonumber(ARGV[2]))
redis.call('EXPIRE', claims, tonumber(ARGV[1]))
return losers
