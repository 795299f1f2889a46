-- authorize: rate limits + credit check + charge + rated event, atomically, in one round trip.
--
-- KEYS (all in the wallet's shard slot, see keys.py):
--   1 state  2 remaining  3 burn  4 expiry  5 ledger  6 events  7 request  8 reservation
--   9.. one sliding-window HASH per rate limit, in the order of the limits in ARGV
-- ARGV:
--   1 request id   2 cost (credits)   3 now ms (0 = Redis server time)   4 answer ttl ms
--   5 hold ms (0 = charge now and append the event; > 0 = reserve `cost` for a later settle)
--   6 wallet  7 consumer  8 route  9 service  10 method  11 path
--   12 number of limits, then pairs: 13 period ms, 14 limit, ...
-- Reply: {status, cost, balance, limit, remaining, reset ms, retry after ms, replayed}
--   status 200 admitted, 402 insufficient credits, 429 over a rate limit; limit is the rate
--   limit closest to exhaustion (-1 when none), remaining what is left of it after this request.
--
-- Guarantees: decide first, write last. A request refused by a rate limit spends no credit; a
-- request refused for credits takes no rate-limit capacity; refusals append no event, they
-- only count in state.refused_*. An admitted request id answers the same again while its
-- answer is kept (ARGV 4), so a retried call charges once.
--
-- Rate limits are sliding windows of BUCKETS buckets per period: the window counted is the
-- current bucket and the BUCKETS before it, so in every span of one period no more than
-- `limit` requests are admitted (a request may be refused up to one bucket early).

local BUCKETS = 10

local request_id, cost = ARGV[1], tonumber(ARGV[2])
local now = server_now_ms(ARGV[3])
local answer_ttl, hold_ms = tonumber(ARGV[4]), tonumber(ARGV[5])

local stored = redis.call('GET', KEYS[7])
if stored then
  local reply = {}
  for value in string.gmatch(stored, '[^,]+') do
    reply[#reply + 1] = tonumber(value)
  end
  reply[8] = 1
  return reply
end

-- 1. Rate limits: read every window; note the tightest one and how long a refusal must wait.
local limits = tonumber(ARGV[12])
local windows = {}
local shown_limit, shown_remaining, shown_reset, retry_after = -1, -1, 0, 0
for i = 1, limits do
  local period = tonumber(ARGV[11 + 2 * i])
  local limit = tonumber(ARGV[12 + 2 * i])
  local key = KEYS[8 + i]
  local width = period / BUCKETS
  local current = math.floor(now / width)
  local flat = redis.call('HGETALL', key)
  local used, buckets = 0, {}
  for j = 1, #flat, 2 do
    local index, count = tonumber(flat[j]), tonumber(flat[j + 1])
    if index < current - BUCKETS then
      redis.call('HDEL', key, flat[j])
    else
      used = used + count
      buckets[#buckets + 1] = {index, count}
    end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  if used + 1 > limit then
    -- Wait until enough old buckets have left the window to admit one more request.
    local freed, wait = 0, 0
    for _, b in ipairs(buckets) do
      freed = freed + b[2]
      wait = (b[1] + BUCKETS + 1) * width - now
      if used - freed + 1 <= limit then
        break
      end
    end
    if wait > retry_after then
      retry_after = wait
      shown_limit, shown_remaining, shown_reset = limit, 0, wait
    end
  elseif retry_after == 0 and (shown_limit < 0 or limit - used - 1 < shown_remaining) then
    -- Capacity comes back when the oldest counted bucket leaves the window.
    local oldest = buckets[1] and buckets[1][1] or current
    shown_limit, shown_remaining = limit, limit - used - 1
    shown_reset = (oldest + BUCKETS + 1) * width - now
  end
  windows[i] = {key, fmt(current), fmt(period + width)}
end

local state, remaining, burn_order, expiry, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
sweep_expired(state, remaining, burn_order, expiry, ledger, now)
local balance = spendable(state)

if retry_after > 0 then
  redis.call('HINCRBY', state, 'refused_rate_limit', 1)
  return {429, cost, balance, shown_limit, 0, shown_reset, retry_after, 0}
end

-- 2. Credits (a free request passes even when an overdraft took the balance below zero).
if cost > 0 and balance < cost then
  redis.call('HINCRBY', state, 'refused_credits', 1)
  return {402, cost, balance, shown_limit, shown_remaining, shown_reset, 0, 0}
end

-- 3. Admitted: take rate-limit capacity, charge, record.
for _, w in ipairs(windows) do
  redis.call('HINCRBY', w[1], w[2], 1)
  redis.call('PEXPIRE', w[1], w[3])
end
local burned = ''
if cost > 0 then
  burned = burn(state, remaining, burn_order, expiry, cost)
  balance = balance - cost
end

if hold_ms > 0 then
  redis.call('HSET', KEYS[8], 'reserved', fmt(cost), 'burned', burned, 'wallet', ARGV[6],
    'consumer', ARGV[7], 'route', ARGV[8], 'service', ARGV[9], 'method', ARGV[10],
    'path', ARGV[11], 'timestamp', fmt(now))
  redis.call('PEXPIRE', KEYS[8], hold_ms)
  ledger_add(ledger, 'hold', request_id, -cost, balance, now)
else
  redis.call('XADD', KEYS[6], '*', 'event_id', request_id, 'wallet', ARGV[6],
    'consumer', ARGV[7], 'route', ARGV[8], 'service', ARGV[9], 'method', ARGV[10],
    'path', ARGV[11], 'cost', fmt(cost), 'timestamp', fmt(now))
  ledger_add(ledger, 'charge', request_id, -cost, balance, now)
end

local reply = {200, cost, balance, shown_limit, shown_remaining, shown_reset, 0, 0}
if answer_ttl > 0 then
  local text = {}
  for i, value in ipairs(reply) do
    text[i] = fmt(value)
  end
  redis.call('SET', KEYS[7], table.concat(text, ','), 'PX', answer_ttl)
end
return reply
