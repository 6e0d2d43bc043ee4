-- Sinew's global rate-limit decision: every counter of one request in one call.
--
-- KEYS[i]     counter name of descriptor i; the window number is appended here
-- ARGV[1]     '1' for sliding windows, '0' for fixed ones
-- ARGV[2i]    limit of descriptor i (requests per window)
-- ARGV[2i+1]  window length of descriptor i, in milliseconds
--
-- Time is Redis's own (TIME), so every proxy sharing this Redis counts the same windows
-- whatever their clocks say.
--
-- Fixed: the count of the current window. Sliding: the current window's count plus the
-- previous window's, weighted by how much of the previous window the sliding window
-- (the last `window` milliseconds) still covers — the two-window approximation, which
-- needs two small counters per key instead of a sorted set of every request.
--
-- A request is counted only when every counter has room for it, so refused requests do
-- not push a sliding window further out and a client that backs off recovers.
--
-- Returns {allowed (1 or 0), limit, remaining, reset_ms} for the tightest counter.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local sliding = ARGV[1] == '1'
local allowed = 1
local tight_limit, tight_remaining, tight_reset = 0, nil, 0
local current = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local index = math.floor(now / window)
  local key = KEYS[i] .. ':' .. string.format('%d', index)
  current[i] = { key, window }
  local used = tonumber(redis.call('GET', key) or '0')
  if sliding then
    local previous = tonumber(redis.call('GET', KEYS[i] .. ':' .. string.format('%d', index - 1)) or '0')
    local covered = 1 - (now - index * window) / window
    used = used + previous * covered
  end
  local remaining = limit - used - 1
  if remaining < 0 then
    allowed = 0
    remaining = 0
  end
  remaining = math.floor(remaining)
  if tight_remaining == nil or remaining < tight_remaining then
    tight_limit = limit
    tight_remaining = remaining
    tight_reset = (index + 1) * window - now
  end
end
if allowed == 1 then
  for _, counter in ipairs(current) do
    if redis.call('INCR', counter[1]) == 1 then
      -- A sliding window still reads this counter during the next window.
      local ttl = counter[2]
      if sliding then ttl = ttl * 2 end
      redis.call('PEXPIRE', counter[1], ttl)
    end
  end
end
return { allowed, tight_limit, tight_remaining, tight_reset }
