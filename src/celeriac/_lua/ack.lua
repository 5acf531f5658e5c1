-- Ack leased messages. ARGV: prefix, then pairs of tag, lease token (delivery count).
-- A lease that expired and went to another consumer is left alone.
local n = 0
for i = 2, #ARGV, 2 do
  local tag = ARGV[i]
  if holds(tag, ARGV[i + 1]) then
    drop_lease(tag)
    redis.call('HDEL', K_DELIVERIES, tag)
    n = n + 1
  end
end
return n
