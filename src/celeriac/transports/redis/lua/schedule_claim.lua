-- Beat's claim: compare-and-set the last run of one periodic entry and, in the same
-- step, publish its message. ARGV: prefix, entry name, expected last run ('' for none),
-- new slot (whole milliseconds), then optionally one publish group of publish.lua:
-- queue, bucket digit, not_before ('' for now), envelope.
-- Returns 1 when claimed (and published), 0 when the stored last run was another:
-- another beat got there first, and nothing is written.
local runs = PREFIX .. 'celeriac.beat.runs'
local current = redis.call('HGET', runs, ARGV[2]) or ''
if current ~= ARGV[3] then
  return 0
end
if current ~= '' and tonumber(ARGV[4]) <= tonumber(current) then
  return 0
end
redis.call('HSET', runs, ARGV[2], ARGV[4])
if #ARGV >= 8 then
  local queue, digit, not_before, raw = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  wake(queue)
  if not_before ~= '' and tonumber(not_before) > now() then
    delayed_add(queue, not_before, digit, raw)
  else
    redis.call('LPUSH', list_key(queue, digit), raw)
  end
end
return 1
