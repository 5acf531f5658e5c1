-- Record finished chord header tasks and claim the chords they complete, in Celery
-- 5.7's "native join" layout, so Celery and celeriac workers can share a chord.
-- ARGV: prefix, ttl (whole seconds; 0 keeps the keys), claim seconds, then five values
-- per part: group id, task id, group index, header size from the message ('' if none),
-- member (JSON [1, task_id, state, result]).
--
-- Keys of a chord (G = prefix .. 'celery-taskset-meta-' .. group id):
--   G.s  header size, set by the producer         G.t  size adjustment (optional)
--   G.j  zset member -> group index                G.d  set of 'task_id:index' recorded
--   G.c  claim: the claimer's token, or 'done'     G    saved group meta (TTL refreshed)
--
-- A part already in G.d is not added again (a header task re-run after a lost worker).
-- When G.j holds the whole header, the chord is claimed for this part's task id unless
-- another token holds it; the same task id may claim again (its own re-run after a
-- crash between claiming and sending the body). Returns one array per claimed chord:
-- {group id, token, member, member, ...} with the members in group index order.
local ttl = tonumber(ARGV[2])
local claim_seconds = tonumber(ARGV[3])
local claims = {}
for i = 4, #ARGV, 5 do
  local gid, tid, index, hint, member = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local g = PREFIX .. 'celery-taskset-meta-' .. gid
  local claim = redis.call('GET', g .. '.c')
  if claim ~= 'done' then
    local marker = tid .. ':' .. index
    if redis.call('SISMEMBER', g .. '.d', marker) == 0 then
      redis.call('ZADD', g .. '.j', index, member)
      redis.call('SADD', g .. '.d', marker)
    end
    if ttl > 0 then
      for _, suffix in ipairs({'.j', '.t', '.s', '.d', ''}) do
        redis.call('EXPIRE', g .. suffix, ttl)
      end
    end
    local size = tonumber(redis.call('GET', g .. '.s') or hint)
    if size then
      local total = size + (tonumber(redis.call('GET', g .. '.t') or 0) or 0)
      if redis.call('ZCARD', g .. '.j') >= total and (not claim or claim == tid) then
        redis.call('SET', g .. '.c', tid, 'EX', claim_seconds)
        local entry = {gid, tid}
        for _, value in ipairs(redis.call('ZRANGE', g .. '.j', 0, -1)) do
          entry[#entry + 1] = value
        end
        claims[#claims + 1] = entry
      end
    end
  end
end
return claims
