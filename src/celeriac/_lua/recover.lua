-- Return every message leased by one consumer (a dead process) to its queue.
-- ARGV: prefix, consumer id. Returns how many went back.
local owner = ARGV[2]
local owned = redis.call('HGETALL', K_OWNER)
local n = 0
for i = 1, #owned, 2 do
  if owned[i + 1] == owner then
    n = n + restore(owned[i])
  end
end
return n
