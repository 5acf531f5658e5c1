-- Move a leased message to the dead-letter list. ARGV: prefix, the dead-letter entry
-- (JSON {queue, payload, reason, failed_at}, built by the caller), lease (tag\0token).
if forget(held(ARGV[3])) == 0 then
  return 0
end
redis.call('LPUSH', K_DEAD, ARGV[2])
return 1
