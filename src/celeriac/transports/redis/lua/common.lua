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
--   Pceleriac.delayed.<queue>   zset (bucket digit .. envelope) -> due time
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
  redis.call('RPUSH', list_key(queue, digit), raw_from(entry, queue))
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
