-- Claim each output key for the item that makes it, and count the job's new items.
-- KEYS: claims hash, job hash, this call's replay key.  ARGV: ttl, ignored, count ('1': each pair is an
-- item of the job; '0': a second output of items already counted, such as a mask beside its cutout),
-- then (output key, item id) pairs.  Returns {index, owner} for each output already claimed (AGAIN when the owner is the same item).
-- A call retried after a dropped reply gets the first call's answer back (the replay key), not AGAIN
-- for the items it claimed itself: those must still be published.
local claims, job, replay = KEYS[1], KEYS[2], KEYS[3]
local saved = redis.call('GET', replay)
if saved then return cjson.decode(saved) end
local losers = {}
local added = 0
local counts = ARGV[3] == '1'
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', claims, ARGV[i], ARGV[i + 1]) == 1 then
    if counts then added = added + 1 end
  else
    local owner = redis.call('HGET', claims, ARGV[i])
    -- a collision is an item of the job too
    if counts and owner ~= ARGV[i + 1] then added = added + 1 end
    losers[#losers + 1] = (i - 2) / 2
    losers[#losers + 1] = owner
  end
end
-- Counted in the same script as the claims: a call retried after a dropped reply adds nothing twice.
redis.call('HINCRBY', job, 'total', added)
redis.call('HINCRBY', job, 'ignored', tonumber(ARGV[2]))
redis.call('EXPIRE', claims, tonumber(ARGV[1]))
redis.call('SET', replay, cjson.encode(losers), 'EX', 600)
return losers
