-- Shared by every celeriac Redis script: prepended to each script when it is loaded.
--
-- Key layout (P = the global key prefix, ARGV[1] of every script):
--   P<queue>                    list, Celery's priority bucket 0 (LPUSH in, RPOP out)
--   P<queue>\6\0223 \6\0226 \6\0229  lists for Celery's buckets 3, 6 and 9
--   P_kombu.binding.<queue>     set, Celery's binding member for the queue
--   Punacked, Punacked_index    hash tag -> [envelope, "", queue] / zset tag -> time
--                               (Celery's layout, so a Celery worker can restore them)
--   Pceleriac.leases            zset tag -> lease deadline (epoch seconds)
--   Pceleriac.lease_owner       hash tag -> consumer id
--   Pceleriac.lease_queue       hash tag -> bucket digit .. queue (where it goes back)
--   Pceleriac.deliveries        hash tag -> delivery count (kept until ack/dead letter)
--   Pceleriac.lease_seq         counter naming the leases (and delayed members) of
--                               envelopes sharing a tag (or all their bytes)
--   Pceleriac.delayed.<queue>   zset (bucket digit .. envelope) -> due time (see
--                               delayed_add: the same envelope twice stays two)
--   Pceleriac.notify.<queue>    list holding at most one wake-up token
--   Pceleriac.dead_letter       list of JSON {queue, payload, reason, failed_at}
--   Pceleriac.revoked.<id>      string, a revocation (expires by itself)
--   Pceleriac.revocations       zset id -> expiry (epoch seconds): which are live
--
-- Key names are derived here from the prefix and queue names, so the scripts do not
-- declare them in KEYS: celeriac (like Celery's Redis transport) does not run on
-- Redis Cluster. Times come from the server clock (TIME), so workers with skewed
-- clocks agree on lease deadlines.

local PREFIX = ARGV[1]
local SEP = '\6\22'
local K_UNACKED = PREFIX .. 'unacked'
local K_INDEX = PREFIX .. 'unacked_index'
local K_LEASES = PREFIX .. 'celeriac.leases'
local K_OWNER = PREFIX .. 'celeriac.lease_owner'
local K_QUEUE = PREFIX .. 'celeriac.lease_queue'
local K_DELIVERIES = PREFIX .. 'celeriac.deliveries'
local K_DEAD = PREFIX .. 'celeriac.dead_letter'
local K_REVOCATIONS = PREFIX .. 'celeriac.revocations'
local K_LEASE_SEQ = PREFIX .. 'celeriac.lease_seq'

-- Redis keeps small hashes and zsets as flat lists ("listpack") that it scans on every
-- lookup; with a few hundred leases in flight that scan dominated the cost of a fetch.
-- A value or member longer than 64 bytes switches a key to a real hash table / skip
-- list for good, so these per-tag keys carry one such entry (it never matches a tag).
local INDEXED = 'celeriac: this entry keeps the key a hash table (O(1) lookups), not a listpack'

-- The four keys get theirs together and never lose it (only tags are removed), so one
-- present means all are: a fetch checks one, not four.
local function indexed()
  if redis.call('HSETNX', K_OWNER, INDEXED, INDEXED) == 1 then
    redis.call('HSETNX', K_QUEUE, INDEXED, INDEXED)
    redis.call('HSETNX', K_DELIVERIES, INDEXED, INDEXED)
    redis.call('ZADD', K_LEASES, 'NX', 'inf', INDEXED)
  end
end

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The list of a queue's priority bucket ('0', '3', '6' or '9').
local function list_key(queue, digit)
  if digit == '0' then
    return PREFIX .. queue
  end
  return PREFIX .. queue .. SEP .. digit
end

local function delayed_key(queue)
  return PREFIX .. 'celeriac.delayed.' .. queue
end

-- Add a delayed message: member bucket digit .. envelope. The same bytes delayed twice
-- (a tool that re-sends an envelope) must stay two messages, so a member already there
-- gets a unique one: '#' .. sequence number .. '#' .. digit .. envelope.
local function delayed_add(queue, due, digit, raw)
  local key = PREFIX .. 'celeriac.delayed.' .. queue
  if redis.call('ZADD', key, 'NX', due, digit .. raw) == 0 then
    local seq = redis.call('INCR', PREFIX .. 'celeriac.lease_seq')
    redis.call('ZADD', key, due, '#' .. seq .. '#' .. digit .. raw)
  end
end

-- A delayed member's bucket digit and envelope.
local function delayed_parts(member)
  if string.sub(member, 1, 1) == '#' then
    local close = string.find(member, '#', 2, true)
    return string.sub(member, close + 1, close + 1), string.sub(member, close + 2)
  end
  return string.sub(member, 1, 1), string.sub(member, 2)
end

local function notify_key(queue)
  return PREFIX .. 'celeriac.notify.' .. queue
end

-- Celery's bucket for a priority number: rounded down to 0, 3, 6 or 9.
local function bucket(priority)
  local p = tonumber(priority) or 0
  if p >= 9 then return '9' elseif p >= 6 then return '6' elseif p >= 3 then return '3' end
  return '0'
end

-- Leave one wake-up token (at most) for a consumer blocked on the queue's notify list.
local function wake(queue)
  local key = notify_key(queue)
  if redis.call('LLEN', key) == 0 then
    redis.call('LPUSH', key, '1')
  end
end

-- The unacked entry Celery reads: [envelope, exchange, routing_key]; the envelope is
-- embedded as it is (it is JSON already), so it comes back out byte for byte.
local function entry_suffix(queue)
  return ', "", ' .. cjson.encode(queue) .. ']'
end

local function entry_for(raw, queue)
  return '[' .. raw .. entry_suffix(queue)
end

local function raw_from(entry, queue)
  return string.sub(entry, 2, #entry - #entry_suffix(queue))
end

-- The tags in `leases` ("tag\0token\0tag\0token...", one argument: redis-py packs
-- one long argument much faster than many short ones) whose lease the caller still
-- holds. The delivery count doubles as the lease token: it grows with every fetch, so a
-- consumer whose lease expired cannot touch the next one.
local function held(leases)
  local tags, tokens = {}, {}
  local pos, n = 1, 0
  while pos <= #leases do
    local stop = string.find(leases, '\0', pos, true) or (#leases + 1)
    n = n + 1
    if n % 2 == 1 then
      tags[#tags + 1] = string.sub(leases, pos, stop - 1)
    else
      tokens[#tokens + 1] = string.sub(leases, pos, stop - 1)
    end
    pos = stop + 1
  end
  if #tags == 0 then
    return tags
  end
  local counts = redis.call('HMGET', K_DELIVERIES, unpack(tags))
  local leased = redis.call('ZMSCORE', K_LEASES, unpack(tags))
  local out = {}
  for i, tag in ipairs(tags) do
    if counts[i] == tokens[i] and leased[i] then
      out[#out + 1] = tag
    end
  end
  return out
end

-- Forget the lease records of `tags` (a list); the delivery counts stay.
local function drop_leases(tags)
  if #tags > 0 then
    redis.call('HDEL', K_UNACKED, unpack(tags))
    redis.call('ZREM', K_INDEX, unpack(tags))
    redis.call('ZREM', K_LEASES, unpack(tags))
    redis.call('HDEL', K_OWNER, unpack(tags))
    redis.call('HDEL', K_QUEUE, unpack(tags))
  end
end

local function drop_lease(tag)
  drop_leases({tag})
end

-- Ack: forget the messages for good.
local function forget(tags)
  if #tags > 0 then
    drop_leases(tags)
    redis.call('HDEL', K_DELIVERIES, unpack(tags))
  end
  return #tags
end

-- The envelope's delivery tag: found by a plain search when it occurs once, parsed
-- otherwise; bytes that are not an envelope get a tag derived from their content.
local function tag_of(raw)
  local s, e = string.find(raw, '"delivery_tag"', 1, true)
  if s and not string.find(raw, '"delivery_tag"', e + 1, true) then
    local tag = string.match(raw, '^%s*:%s*"([^"\\%z]+)"', e + 1)
    if tag then
      return tag
    end
  end
  local ok, env = pcall(cjson.decode, raw)
  if ok and type(env) == 'table' and type(env['properties']) == 'table' then
    local tag = env['properties']['delivery_tag']
    if type(tag) == 'string' and tag ~= '' and not string.find(tag, '\0', 1, true) then
      return tag
    end
  end
  return 'celeriac-' .. redis.sha1hex(raw)
end

-- Lease identities, in place: the envelope's delivery tag, unless a lease already holds
-- it or an earlier message of the batch took it (envelopes sharing a tag: a non-kombu
-- producer, a tool that re-sends envelopes, two identical undecodable messages); then
-- tag .. '~' .. a sequence number, so no lease record ever overwrites another's.
local function unique_ids(tags)
  local leased = redis.call('HMGET', K_OWNER, unpack(tags))
  local used = {}
  for n, tag in ipairs(tags) do
    if leased[n] or used[tag] then
      local id
      repeat
        id = tag .. '~' .. redis.call('INCR', K_LEASE_SEQ)
      until not used[id] and redis.call('HEXISTS', K_OWNER, id) == 0
      tags[n] = id
    end
    used[tags[n]] = true
  end
end

-- A lease renamed by unique_ids keeps no delivery count once its message is back in the
-- queue (the next fetch knows the message by its envelope's tag only).
local function forget_renamed(id, raw)
  if tag_of(raw) ~= id then
    redis.call('HDEL', K_DELIVERIES, id)
  end
end

-- Put a leased message back at the consuming end of its list (delivered next). The
-- delivery count stays: a lost lease counts towards the redelivery limit.
local function restore(tag)
  local info = redis.call('HGET', K_QUEUE, tag)
  local entry = redis.call('HGET', K_UNACKED, tag)
  drop_lease(tag)
  if not info or not entry then
    -- a Celery worker restored it already: only our records were left
    redis.call('HDEL', K_DELIVERIES, tag)
    return 0
  end
  local digit, queue = string.sub(info, 1, 1), string.sub(info, 2)
  local raw = raw_from(entry, queue)
  redis.call('RPUSH', list_key(queue, digit), raw)
  forget_renamed(tag, raw)
  wake(queue)
  return 1
end

-- Restore an entry a Celery worker left in `unacked` (it has no lease of ours), the way
-- Celery's own restore does: to the list named by its routing key, at the consuming end.
local function restore_foreign(tag)
  local entry = redis.call('HGET', K_UNACKED, tag)
  redis.call('HDEL', K_UNACKED, tag)
  redis.call('ZREM', K_INDEX, tag)
  if not entry then
    return 0
  end
  local ok, item = pcall(cjson.decode, entry)
  if not ok or type(item) ~= 'table' or type(item[1]) ~= 'table' or type(item[3]) ~= 'string' then
    local letter = {queue = '', payload = entry, reason = 'unreadable unacked entry', failed_at = now()}
    redis.call('LPUSH', K_DEAD, cjson.encode(letter))
    return 0
  end
  local queue = item[3]
  local suffix = ', ' .. cjson.encode(item[2]) .. ', ' .. cjson.encode(queue) .. ']'
  local raw
  if string.sub(entry, 1, 1) == '[' and string.sub(entry, -#suffix) == suffix then
    raw = string.sub(entry, 2, #entry - #suffix)
  else
    raw = cjson.encode(item[1])
  end
  local props = item[1]['properties']
  local priority = type(props) == 'table' and props['priority'] or 0
  redis.call('RPUSH', list_key(queue, bucket(priority)), raw)
  wake(queue)
  return 1
end

-- Return expired leases (and Celery's stale unacked entries older than
-- `foreign_timeout` seconds, if > 0) to their queues. Atomic, so concurrent sweepers
-- return each message exactly once.
local function sweep(t, foreign_timeout)
  local n = 0
  local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', t, 'LIMIT', 0, 1000)
  for _, tag in ipairs(expired) do
    n = n + restore(tag)
  end
  if foreign_timeout > 0 then
    local stale = redis.call('ZRANGEBYSCORE', K_INDEX, '-inf', t - foreign_timeout, 'LIMIT', 0, 100)
    for _, tag in ipairs(stale) do
      if not redis.call('ZSCORE', K_LEASES, tag) then
        n = n + restore_foreign(tag)
      end
    end
  end
  return n
end
