-- Return leased messages to their queue. ARGV: prefix, not_before ('' for now),
-- count ('1': the lease counts as a delivery, '0': it does not), leases
-- (tag\0token\0...). Due now: RPUSH to the consuming end (delivered next); later: the
-- queue's delayed zset.
local not_before = ARGV[2]
local later = not_before ~= '' and tonumber(not_before) > now()
local tags = held(ARGV[4])
if #tags == 0 then
  return 0
end
local infos = redis.call('HMGET', K_QUEUE, unpack(tags))
local entries = redis.call('HMGET', K_UNACKED, unpack(tags))
drop_leases(tags)
local n = 0
for i, tag in ipairs(tags) do
  if ARGV[3] == '0' and redis.call('HINCRBY', K_DELIVERIES, tag, -1) <= 0 then
    redis.call('HDEL', K_DELIVERIES, tag)
  end
  local info, entry = infos[i], entries[i]
  if info and entry then -- (without them a Celery worker has restored it already)
    local digit, queue = string.sub(info, 1, 1), string.sub(info, 2)
    local raw = raw_from(entry, queue)
    forget_renamed(tag, raw)
    if later then
      delayed_add(queue, not_before, digit, raw)
    else
      redis.call('RPUSH', list_key(queue, digit), raw)
    end
    wake(queue)
    n = n + 1
  end
end
return n
