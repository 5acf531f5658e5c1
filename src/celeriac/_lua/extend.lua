-- Extend leases. ARGV: prefix, seconds, then pairs of tag, lease token. The Celery
-- index is refreshed too, so a Celery worker's restore does not take a live message.
local t = now()
local deadline = t + tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV, 2 do
  local tag = ARGV[i]
  if holds(tag, ARGV[i + 1]) then
    redis.call('ZADD', K_LEASES, 'XX', deadline, tag)
    redis.call('ZADD', K_INDEX, 'XX', t, tag)
    n = n + 1
  end
end
return n
