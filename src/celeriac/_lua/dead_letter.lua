-- Move a leased message to the dead-letter list. ARGV: prefix, tag, lease token, the
-- dead-letter entry (JSON {queue, payload, reason, failed_at}, built by the caller).
local tag = ARGV[2]
if not holds(tag, ARGV[3]) then
  return 0
end
drop_lease(tag)
redis.call('HDEL', K_DELIVERIES, tag)
redis.call('LPUSH', K_DEAD, ARGV[4])
return 1
