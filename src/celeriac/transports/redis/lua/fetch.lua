-- Lease up to N messages from the given queues in one atomic step (never pop-then-record),
-- after acking the caller's finished messages.
-- ARGV: prefix, max_count, lease_seconds, owner, sweep ('1': return expired leases and,
-- if foreign_timeout > 0, Celery's stale unacked entries first), foreign_timeout, bucket
-- order ('9630' serves higher priority first, '0369' is Celery's Redis order), number of
-- queues Q, the queue names in the order to serve them (the caller rotates it for
-- fairness), then the leases to ack (tag\0token\0...).
-- Returns {next_due_ms, live_revocations, queue_index, tag, envelope, delivery_count,
-- ...}; next_due_ms (-1: nothing) is how long until a delayed message or a lease comes
-- due, given only when nothing was leased; live_revocations counts the revocations not
-- yet expired (0 tells the caller it need not look the batch's task ids up).
local max_count = tonumber(ARGV[2])
local lease_seconds = tonumber(ARGV[3])
local owner = ARGV[4]
local order = ARGV[7]
local nq = tonumber(ARGV[8])
local queues = {}
for i = 9, 8 + nq do
  queues[#queues + 1] = ARGV[i]
end
forget(held(ARGV[9 + nq]))

local t = now()
indexed()
if ARGV[5] == '1' then
  sweep(t, tonumber(ARGV[6]))
end

-- Promote delayed messages that are due.
for _, queue in ipairs(queues) do
  local key = delayed_key(queue)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', t, 'LIMIT', 0, 1000)
  if #due > 0 then
    for _, member in ipairs(due) do
      local digit, raw = delayed_parts(member)
      redis.call('LPUSH', list_key(queue, digit), raw)
    end
    redis.call('ZREM', key, unpack(due))
  end
end

-- Pop, bucket by bucket, queue by queue.
local raws, tags, origins, where = {}, {}, {}, {}
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
        local n = #raws + 1
        raws[n], tags[n], origins[n], where[n] = raw, tag_of(raw), digit .. queue, i
      end
      need = need - #items
    end
  end
end

-- Record every lease.
local out = {-1, 0}
if #raws > 0 then
  unique_ids(tags)
  redis.call('ZREMRANGEBYSCORE', K_REVOCATIONS, '-inf', t)
  out[2] = redis.call('ZCARD', K_REVOCATIONS)
  local counts = redis.call('HMGET', K_DELIVERIES, unpack(tags))
  local suffixes = {}
  for i, queue in ipairs(queues) do
    suffixes[i] = entry_suffix(queue)
  end
  -- (numbers formatted once: Redis would format each one again for every member)
  local now_text, deadline = string.format('%.6f', t), string.format('%.6f', t + lease_seconds)
  local unacked, index, leases, owners, origin, deliveries = {}, {}, {}, {}, {}, {}
  for n, tag in ipairs(tags) do
    local count = (tonumber(counts[n]) or 0) + 1
    local k = 2 * n
    unacked[k - 1], unacked[k] = tag, '[' .. raws[n] .. suffixes[where[n]]
    index[k - 1], index[k] = now_text, tag
    leases[k - 1], leases[k] = deadline, tag
    owners[k - 1], owners[k] = tag, owner
    origin[k - 1], origin[k] = tag, origins[n]
    deliveries[k - 1], deliveries[k] = tag, tostring(count)
    local m = #out
    out[m + 1], out[m + 2], out[m + 3], out[m + 4] = where[n], tag, raws[n], count
  end
  redis.call('HSET', K_UNACKED, unpack(unacked))
  redis.call('ZADD', K_INDEX, unpack(index))
  redis.call('ZADD', K_LEASES, unpack(leases))
  redis.call('HSET', K_OWNER, unpack(owners))
  redis.call('HSET', K_QUEUE, unpack(origin))
  redis.call('HSET', K_DELIVERIES, unpack(deliveries))
end

-- Wake-up tokens. If the batch is not full, every list is empty now: delete the tokens
-- (no idle consumer wakes for nothing). Otherwise more may wait: leave one per queue, so
-- the next idle consumer wakes and takes its share.
if need > 0 then
  local keys = {}
  for i, queue in ipairs(queues) do
    keys[i] = notify_key(queue)
  end
  redis.call('DEL', unpack(keys))
else
  for _, queue in ipairs(queues) do
    wake(queue)
  end
end

if #raws == 0 then
  local next_due
  for _, queue in ipairs(queues) do
    local first = redis.call('ZRANGE', delayed_key(queue), 0, 0, 'WITHSCORES')
    if first[2] and (not next_due or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
  local lease = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if lease[1] ~= INDEXED and lease[2] and (not next_due or tonumber(lease[2]) < next_due) then
    next_due = tonumber(lease[2])
  end
  if next_due then
    out[1] = math.max(0, math.floor((next_due - t) * 1000))
  end
end
return out
