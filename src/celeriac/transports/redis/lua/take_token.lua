-- Global rate limit: take one token from a bucket refilled at a rate, atomically, by the
-- server clock. ARGV: prefix, bucket name, rate (tokens/s), capacity.
-- Returns "0" when a token was taken, else the seconds until one is available.
local key = PREFIX .. ARGV[2]
local rate = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local t = now()
local state = redis.call('HMGET', key, 'tokens', 'updated')
local level = capacity
if state[1] then
  level = math.min(capacity, tonumber(state[1]) + math.max(0, t - tonumber(state[2])) * rate)
end
local wait = 0
if level >= 1 then
  level = level - 1
else
  wait = (1 - level) / rate
end
redis.call('HSET', key, 'tokens', tostring(level), 'updated', tostring(t))
-- an idle bucket is full again after capacity / rate seconds: it can go then
redis.call('PEXPIRE', key, math.ceil((capacity / rate) * 1000) + 1000)
return tostring(wait)
