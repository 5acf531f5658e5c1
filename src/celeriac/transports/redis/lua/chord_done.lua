-- The body of a claimed chord was sent: if the claim is still ours, drop the chord's
-- keys and mark it 'done' (so late duplicates of header tasks do nothing), as Celery.
-- ARGV: prefix, group id, token, seconds to remember 'done'. Returns 1 if it was ours.
local g = PREFIX .. 'celery-taskset-meta-' .. ARGV[2]
if redis.call('GET', g .. '.c') == ARGV[3] then
  redis.call('DEL', g .. '.j', g .. '.t', g .. '.s', g .. '.d')
  redis.call('SET', g .. '.c', 'done', 'EX', tonumber(ARGV[4]))
  return 1
end
return 0
