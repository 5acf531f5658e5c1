-- Return leased messages to their queue. ARGV: prefix, not_before ('' for now),
-- count ('1': the lease counts as a delivery, '0': it does not), then pairs of tag,
-- lease token. Due now: RPUSH to the consuming end (delivered next); later: the
-- queue's delayed zset.
local t = now()
local not_before = ARGV[2]
local uncount = ARGV[3] == '0'
local n = 0
for i = 4, #ARGV, 2 do
  local tag = ARGV[i]
  if holds(tag, ARGV[i + 1]) then
    local info = redis.call('HGET', K_QUEUE, tag)
    local entry = redis.call('HGET', K_UNACKED, tag)
    drop_lease(tag)
    if uncount and redis.call('HINCRBY', K_DELIVERIES, tag, -1) <= 0 then
      redis.call('HDEL', K_DELIVERIES, tag)
    end
    if info and entry then -- (without them a Celery worker has restored it already)
      local digit, queue = string.sub(info, 1, 1), string.sub(info, 2)
      local raw = raw_from(entry, queue)
      if not_before ~= '' and tonumber(not_before) > t then
        redis.call('ZADD', delayed_key(queue), not_before, digit .. raw)
      else
        redis.call('RPUSH', list_key(queue, digit), raw)
      end
      wake(queue)
      n = n + 1
    end
  end
end
return n
