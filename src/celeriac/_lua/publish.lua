-- Publish messages. ARGV: prefix, then groups of four: queue, bucket digit, not_before
-- (epoch seconds, '' for now), envelope. A message that is not yet due goes to the
-- queue's delayed zset, the others are LPUSHed to their priority list (Celery's layout).
-- The queue's Celery binding is recorded, and one wake-up token is left per queue.
local t = now()
local seen = {}
for i = 2, #ARGV, 4 do
  local queue, digit, not_before, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if not seen[queue] then
    seen[queue] = true
    local member = queue .. SEP .. SEP .. queue
    redis.call('SADD', PREFIX .. '_kombu.binding.' .. queue, member)
    redis.call('SADD', PREFIX .. '_kombu.binding_permanent.' .. queue, member)
    wake(queue)
  end
  if not_before ~= '' and tonumber(not_before) > t then
    redis.call('ZADD', delayed_key(queue), not_before, digit .. raw)
  else
    redis.call('LPUSH', list_key(queue, digit), raw)
  end
end
return 1
