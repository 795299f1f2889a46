-- settle: charge the actual price of a request whose credits were held at authorize.
--
-- KEYS (one slot): 1-5 the paying wallet (state, remaining, burn, expiry, ledger)
--   6-10 its parent (the same five again when it has none)  11 events  12 reservation
--   13 alerts  14 open holds of the shard
-- ARGV: 1 request id  2 actual cost (credits)  3 now ms (0 = server time)  4 answer ttl ms
--   5 HTTP status of the response ("" when unknown)  6 the wallet that holds (KEYS 1-5)
--   7.. name, value pairs added to the event (a computed price's components: price.py)
-- Reply: {status, cost, balance, unpaid, replayed}: status 200 settled, 404 no such hold
--   (never held, lapsed, or settled longer ago than the answer ttl). A hold of another
--   wallet is an error, before anything is written: KEYS 1-10 are the caller's wallet's.
--
-- Rules: an actual cost below the hold gives the difference back to the grants it was taken
-- from, last burned first (the parent's share first; a grant that expired meanwhile forfeits
-- its share, as it would have). An actual cost above the hold burns the extra from the
-- wallet, then from its parent; what they cannot cover is recorded as the wallet's
-- overdraft, so the balance goes below zero by at most the part of the settled price that
-- exceeded what was there (the plugin clamps that price to its `max_cost`). Overdraft is
-- paid from the next grants. Caps do not refuse a settle (the request was served) but count
-- it, overdraft included. The rated event is appended here, with the
-- actual cost and the held estimate.

local request_id, actual = ARGV[1], tonumber(ARGV[2])
local now = server_now_ms(ARGV[3])
local alerts = KEYS[13]

local hold = redis.call('HGETALL', KEYS[12])
local h = {}
for i = 1, #hold, 2 do
  h[hold[i]] = hold[i + 1]
end
if h.wallet and h.wallet ~= ARGV[6] then
  return redis.error_reply('ERR request ' .. request_id .. ' was held by another wallet')
end
if h.settled then
  local reply = decode_reply(h.settled)
  reply[5] = 1
  return reply
end

redis.call('ZREM', KEYS[14], request_id)
local own, parent, finish = open_family(h.wallet or '', h.parent or '', now, alerts)
if #hold == 0 then
  return finish({404, actual, spendable(own), 0, 0})
end

-- Add `delta` to a spending counter (`kind` 'spent' or 'drawn') of every period.
local function count(w, kind, delta)
  for _, p in ipairs(PERIODS) do
    put(w, p[kind], math.max(num(w, p[kind]) + delta, 0))
  end
end

local reserved, from_parent = tonumber(h.reserved), tonumber(h.from_parent or '0')
local from_own = reserved - from_parent
local own_before = spendable(own)  -- plans.lua
-- Overage (plans.lua): a price below the hold gives back the overage it held first.
local held_overage = tonumber(h.overage or '0')
if actual < reserved and held_overage > 0 then
  local back = math.min(reserved - actual, held_overage)
  plan_tools().give_back_overage(own, back, request_id)
  held_overage, reserved = held_overage - back, reserved - back
end
local unpaid = 0
if actual < reserved then
  local back = reserved - actual
  local to_parent = math.min(back, from_parent)
  if to_parent > 0 then
    refund(parent, h.parent_burned, to_parent)
    count(parent, 'spent', -to_parent)
    count(own, 'drawn', -to_parent)
  end
  if back > to_parent then
    refund(own, h.burned, back - to_parent)
    count(own, 'spent', -(back - to_parent))
  end
elseif actual > reserved then
  local extra = actual - reserved
  local take = math.min(math.max(spendable(own), 0), extra)
  if take > 0 then
    burn(own, take)
    count(own, 'spent', take)
  end
  local rest = extra - take
  if parent and rest > 0 then
    local give = math.min(math.max(spendable(parent), 0), rest)
    if give > 0 then
      burn(parent, give)
      count(parent, 'spent', give)
      count(own, 'drawn', give)
      rest = rest - give
    end
  end
  unpaid = rest
  if unpaid > 0 then
    put(own, 'overdraft', num(own, 'overdraft') + unpaid)
    count(own, 'spent', unpaid)  -- spent on credit: hard caps see it
  end
  alert_thresholds(alerts, request_id, own)
  if parent then
    alert_thresholds(alerts, request_id, parent)
  end
  -- plans.lua: unpaid extra of a wallet that allows overage is overage; balance alerts.
  if unpaid > 0 and own.f.overage_max then
    plan_tools().count_overage(own, unpaid)
    held_overage = held_overage + unpaid
  end
  balance_alerts(alerts, request_id, own, own_before)
end

local balance = spendable(own)
local event = {'event_id', request_id, 'wallet', h.wallet, 'consumer', h.consumer,
  'route', h.route, 'service', h.service, 'method', h.method, 'path', h.path,
  'cost', fmt(actual), 'timestamp', h.timestamp, 'reserved', h.reserved, 'status', ARGV[5]}
if parent then
  event[#event + 1], event[#event + 2] = 'parent', h.parent
end
if held_overage > 0 then  -- plans.lua: served on credit, to be invoiced
  event[#event + 1], event[#event + 2] = 'overage', fmt(held_overage)
end
for i = 7, #ARGV do  -- price.py: the price's components
  event[#event + 1] = ARGV[i]
end
redis.call('XADD', KEYS[11], '*', unpack(event))
ledger_add(own, 'settle', request_id, reserved - actual, balance)

local reply = {200, actual, balance, unpaid, 0}
redis.call('DEL', KEYS[12])
redis.call('HSET', KEYS[12], 'settled', encode_reply(reply), 'wallet', h.wallet)
redis.call('PEXPIRE', KEYS[12], tonumber(ARGV[4]))
return finish(reply)
