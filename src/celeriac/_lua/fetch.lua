-- Lease up to N messages from the given queues in one atomic step (never pop-then-record),
-- after acking the caller's finished messages.
-- ARGV: prefix, max_count, lease_seconds, owner, foreign_timeout, bucket order ('9630'
-- serves higher priority first, '0369' is Celery's Redis order), number of acks A, then
-- A pairs of tag, lease token, then the queue names in the order to serve them (the
-- caller rotates it for fairness).
-- Returns {next_due_ms, queue_index, tag, envelope, delivery_count, ...}; next_due_ms
-- (-1: nothing) is how long until a delayed message or a lease comes due, given only
-- when nothing was leased.
local max_count = tonumber(ARGV[2])
local lease_seconds = tonumber(ARGV[3])
local owner = ARGV[4]
local order = ARGV[6]
local first_queue = 8 + 2 * tonumber(ARGV[7])
for i = 8, first_queue - 1, 2 do
  if holds(ARGV[i], ARGV[i + 1]) then
    drop_lease(ARGV[i])
    redis.call('HDEL', K_DELIVERIES, ARGV[i])
  end
end
local queues = {}
for i = first_queue, #ARGV do
  queues[#queues + 1] = ARGV[i]
end

local t = now()
sweep(t, tonumber(ARGV[5]))

-- Promote delayed messages that are due.
for _, queue in ipairs(queues) do
  local key = delayed_key(queue)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', t, 'LIMIT', 0, 1000)
  if #due > 0 then
    for _, member in ipairs(due) do
      redis.call('LPUSH', list_key(queue, string.sub(member, 1, 1)), string.sub(member, 2))
    end
    redis.call('ZREM', key, unpack(due))
  end
end

-- The envelope's delivery tag: found by a plain search when it occurs once, parsed
-- otherwise; bytes that are not an envelope get a tag derived from their content.
local function tag_of(raw)
  local s, e = string.find(raw, '"delivery_tag"', 1, true)
  if s and not string.find(raw, '"delivery_tag"', e + 1, true) then
    local tag = string.match(raw, '^%s*:%s*"([^"\\]+)"', e + 1)
    if tag then
      return tag
    end
  end
  local ok, env = pcall(cjson.decode, raw)
  if ok and type(env) == 'table' and type(env['properties']) == 'table' then
    local tag = env['properties']['delivery_tag']
    if type(tag) == 'string' and tag ~= '' then
      return tag
    end
  end
  return 'celeriac-' .. redis.sha1hex(raw)
end

local deadline = t + lease_seconds
local out = {-1}
local unacked, index, leases, owners, origins = {}, {}, {}, {}, {}
local need = max_count
for b = 1, #order do
  local digit = string.sub(order, b, b)
  for i, queue in ipairs(queues) do
    if need <= 0 then
      break
    end
    local items = redis.call('RPOP', list_key(queue, digit), need)
    if items then
      for _, raw in ipairs(items) do
        local tag = tag_of(raw)
        local n = #unacked
        unacked[n + 1], unacked[n + 2] = tag, entry_for(raw, queue)
        index[n + 1], index[n + 2] = t, tag
        leases[n + 1], leases[n + 2] = deadline, tag
        owners[n + 1], owners[n + 2] = tag, owner
        origins[n + 1], origins[n + 2] = tag, digit .. queue
        local count = redis.call('HINCRBY', K_DELIVERIES, tag, 1)
        local m = #out
        out[m + 1], out[m + 2], out[m + 3], out[m + 4] = i, tag, raw, count
      end
      need = need - #items
    end
  end
end

if #unacked > 0 then
  redis.call('HSET', K_UNACKED, unpack(unacked))
  redis.call('ZADD', K_INDEX, unpack(index))
  redis.call('ZADD', K_LEASES, unpack(leases))
  redis.call('HSET', K_OWNER, unpack(owners))
  redis.call('HSET', K_QUEUE, unpack(origins))
end

-- Wake-up tokens: keep one while a queue still holds messages (the next idle consumer
-- wakes and takes its share), none once it is empty (no idle consumer wakes for nothing).
for _, queue in ipairs(queues) do
  local left = 0
  for b = 1, #order do
    left = left + redis.call('LLEN', list_key(queue, string.sub(order, b, b)))
  end
  if left > 0 then
    wake(queue)
  else
    redis.call('DEL', notify_key(queue))
  end
end

if #out == 1 then
  local next_due
  for _, queue in ipairs(queues) do
    local first = redis.call('ZRANGE', delayed_key(queue), 0, 0, 'WITHSCORES')
    if first[2] and (not next_due or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
  local lease = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if lease[2] and (not next_due or tonumber(lease[2]) < next_due) then
    next_due = tonumber(lease[2])
  end
  if next_due then
    out[1] = math.max(0, math.floor((next_due - t) * 1000))
  end
end
return out
