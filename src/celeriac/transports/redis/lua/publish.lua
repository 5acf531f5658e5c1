-- Publish messages. ARGV: prefix, then groups of four: queue, bucket digit, not_before
-- (epoch seconds, '' for now), envelope. A message that is not yet due goes to the
-- queue's delayed zset, the others are LPUSHed to their priority list (Celery's layout).
-- Each queue is left one wake-up token.
local t
local seen = {}
for i = 2, #ARGV, 4 do
  local queue, digit, not_before, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if not seen[queue] then
    seen[queue] = true
    wake(queue)
  end
  if not_before ~= '' then
    t = t or now()
  end
  if not_before ~= '' and tonumber(not_before) > t then
    delayed_add(queue, not_before, digit, raw)
  else
    redis.call('LPUSH', list_key(queue, digit), raw)
  end
end
return 1
