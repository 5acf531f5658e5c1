-- Return every message leased by one consumer to its queue, except the ones it names:
-- a dead process names none; a live one whose fetch lost its reply names what it holds.
-- ARGV: prefix, consumer id, tags to keep... Returns how many went back.
local owner = ARGV[2]
local keep = {}
for i = 3, #ARGV do
  keep[ARGV[i]] = true
end
local owned = redis.call('HGETALL', K_OWNER)
local n = 0
for i = 1, #owned, 2 do
  if owned[i + 1] == owner and not keep[owned[i]] then
    n = n + restore(owned[i])
  end
end
return n
