-- Extend leases. ARGV: prefix, seconds, leases (tag\0token\0...). The Celery
-- index is refreshed too, so a Celery worker's restore does not take a live message.
local t = now()
local deadline = t + tonumber(ARGV[2])
local tags = held(ARGV[3])
if #tags > 0 then
  local leases, index = {}, {}
  for _, tag in ipairs(tags) do
    leases[#leases + 1], leases[#leases + 2] = deadline, tag
    index[#index + 1], index[#index + 2] = t, tag
  end
  redis.call('ZADD', K_LEASES, 'XX', unpack(leases))
  redis.call('ZADD', K_INDEX, 'XX', unpack(index))
end
return #tags
