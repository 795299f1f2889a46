-- authorize: rate limits + budgets + credit check + charge + rated event, atomically, in one
-- round trip.
--
-- KEYS (all in one cluster slot: a wallet and its parent share their root's shard, keys.py):
--   1-5  the paying wallet: state, remaining, burn, expiry, ledger
--   6-10 its parent wallet (the same five keys again when it has none)
--   11 events  12 request (the wallet's stored answer)  13 reservation (hold)  14 alerts
--   15 abuse throttle window
--   16 open holds of the shard (ZSET request id -> deadline)
--   17.. one sliding-window HASH per rate limit, in the order of the limits in ARGV
-- ARGV:
--   1 request id  2 cost (credits)  3 now ms (0 = Redis server time)  4 answer ttl ms
--   5 hold ms (0 = charge now and append the event; > 0 = hold `cost` for a later settle,
--     which the forwarder makes at the estimate once this has passed: see lapsed_holds.py)
--   6 wallet  7 consumer  8 route  9 service  10 method  11 path  12 parent wallet ("" = none)
--   13 abuse factor (0 = off)  14 warm-up minutes  15 least credits/minute to alarm
--   16 throttle requests/minute while abuse is suspected (0 = alert only)
--   17 number of limits, then pairs: 18 period ms, 19 limit, ...
-- Reply: {status, cost, balance, limit, remaining, reset ms, retry after ms, replayed, reason}
--   status 200 admitted, 402 refused for credits or a budget, 429 over a rate limit; balance
--   is what this caller can still spend (own wallet plus what the parent may still give it);
--   limit is the rate limit closest to exhaustion (-1 when none); reason is "" or one of
--   credits, cap:day, cap:month, parent_cap:day, parent_cap:month, member_cap:day,
--   member_cap:month, rate_limit, abuse_throttle (and "overdraft" for a replay, below).
--
-- Guarantees: decide first, write last. A request refused by a rate limit spends no credit; a
-- refused request takes no rate-limit capacity and appends no event (it is counted in
-- state.refused_*). An admitted request id answers the same again while its answer is kept
-- (ARGV 4), so a retried call charges once. Every alert is emitted once per crossing.
--
-- Rate limits are sliding windows of BUCKETS buckets per period: the window counted is the
-- current bucket and the BUCKETS before it, so in every span of one period no more than
-- `limit` requests are admitted (a request may be refused up to one bucket early).

local BUCKETS = 10
local LAPSED_HOLD_KEPT_MS = 86400000  -- a hold past its deadline waits this long for a sweep
local EWMA_ALPHA = 0.1  -- weight of the last full minute in the burn-rate baseline
local PIN_LOOKBACK_MS = 600000  -- a pin reads ledger entries from 10 min before the request

local request_id, cost = ARGV[1], tonumber(ARGV[2])
local now = server_now_ms(ARGV[3])
local answer_ttl, hold_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local abuse_factor, warmup = tonumber(ARGV[13]), tonumber(ARGV[14])
local min_rate, throttle = tonumber(ARGV[15]), tonumber(ARGV[16])
local alerts = KEYS[14]

-- Replay modes (spool/replay.py, on_redis_error=spool): the last ARGV is "replay:<ms>" or
-- "pin:<ms>", <ms> the time the request was served, after the limits (none are passed) and,
-- for a replayed credits-metered request, the name/value pairs its event adds (reserved,
-- status, the price's components), and ":sent" if its call may have run before Redis went
-- away (its reply lost).
-- A pin comes first, for such a request: it keeps the request's stored answer for ARGV 4
-- (the replay's long ttl), so that its replay, however late, finds it and charges nothing.
-- An outage longer than the live answer's ttl leaves no answer: then the wallet's ledger
-- tells whether the call ran (its last LEDGER_MAXLEN entries; the pin comes as soon as Redis
-- answers again, before the wallet's new traffic pushes the entry out), and an answer is
-- stored in its stead. A replay of such a request looks again (a stalled Redis may have run
-- the call after the pin). Reply: replayed = 1 if the request had been charged (or held).
local replay_kind, replay_at, replay_sent = string.match(ARGV[#ARGV], '^(%l+):(%d+)(:?%l*)$')
local function charged_before()
  if replay_sent ~= ':sent'
      or not ledger_has(KEYS[5], request_id, tonumber(replay_at) - PIN_LOOKBACK_MS) then
    return false
  end
  redis.call('SET', KEYS[12], encode_reply({200, cost, 0, -1, -1, 0, 0, 0, ''}),
    'PX', answer_ttl)
  return true
end
if replay_kind == 'pin' then
  local kept = redis.call('PEXPIRE', KEYS[12], answer_ttl) == 1 or charged_before()
  return {200, 0, 0, -1, -1, 0, 0, kept and 1 or 0, 'pinned'}
end

local stored = redis.call('GET', KEYS[12])
if stored then
  local reply = decode_reply(stored)
  reply[8] = 1
  return reply
end
-- Replay ("replay:<ms>", above) of a request served while Redis was away: it was served
-- already, so it is admitted whatever the balance, limits and caps (which count it): what
-- the wallet and its parent cannot pay becomes the wallet's overdraft, alerted
-- (`overdraft`). The wallet's counters use Redis's clock (ARGV 3 is 0), the event the time
-- it was served. Its answer is kept for ARGV 4 (the replay's long ttl), so a replay resent
-- after a crash finds it above and charges nothing.
if replay_kind == 'replay' then
  if charged_before() then
    return {200, cost, 0, -1, -1, 0, 0, 1, ''}
  end
  local own, parent, finish = open_family(ARGV[6], ARGV[12], now, alerts)  -- plans renew too
  local from_own = math.min(cost, math.max(spendable(own), 0))
  local from_parent = parent and math.min(cost - from_own, math.max(spendable(parent), 0)) or 0
  local unpaid = cost - from_own - from_parent
  if from_own > 0 then
    burn(own, from_own)
  end
  if from_parent > 0 then
    burn(parent, from_parent)
  end
  for _, p in ipairs(PERIODS) do
    put(own, p.spent, num(own, p.spent) + from_own + unpaid)
    if from_parent > 0 then
      put(own, p.drawn, num(own, p.drawn) + from_parent)
      put(parent, p.spent, num(parent, p.spent) + from_parent)
    end
  end
  if unpaid > 0 then
    put(own, 'overdraft', num(own, 'overdraft') + unpaid)
    alert(alerts, request_id .. ':overdraft', 'overdraft', own, 'unpaid', fmt(unpaid),
      'request_id', request_id)
  end
  if cost > 0 then
    alert_thresholds(alerts, request_id, own)
    if from_parent > 0 then
      alert_thresholds(alerts, request_id, parent)
    end
  end
  local event = {'event_id', request_id, 'wallet', ARGV[6], 'consumer', ARGV[7],
    'route', ARGV[8], 'service', ARGV[9], 'method', ARGV[10], 'path', ARGV[11],
    'cost', fmt(cost), 'timestamp', replay_at}
  if from_parent > 0 then
    event[#event + 1], event[#event + 2] = 'parent', ARGV[12]
    event[#event + 1], event[#event + 2] = 'parent_cost', fmt(from_parent)
  end
  for i = 18 + 2 * tonumber(ARGV[17]), #ARGV - 1 do  -- a metered request's settle fields
    event[#event + 1] = ARGV[i]
  end
  redis.call('XADD', KEYS[11], '*', unpack(event))
  ledger_add(own, 'charge', request_id, -(from_own + unpaid), spendable(own))
  if from_parent > 0 then
    ledger_add(parent, 'charge', request_id .. '@' .. ARGV[6], -from_parent, spendable(parent))
  end
  local reply = {200, cost, spendable(own), -1, -1, 0, 0, 0, unpaid > 0 and 'overdraft' or ''}
  redis.call('SET', KEYS[12], encode_reply(reply), 'PX', answer_ttl)
  return finish(reply)
end
-- Hold keys are per shard: never take over a hold that another request id still owns.
if hold_ms > 0 and redis.call('EXISTS', KEYS[13]) == 1 then
  return redis.error_reply('ERR request ' .. request_id .. ' already holds credits')
end

local own, parent, finish = open_family(ARGV[6], ARGV[12], now, alerts)

-- Burn-rate baseline: fold each finished minute into an exponentially weighted moving
-- average (minutes under suspicion are left out, so abuse never becomes the new normal).
local minute = math.floor(now / 60000)
local last_minute = own.f.burn_minute
if not last_minute then
  put(own, 'burn_minute', minute)
  put(own, 'burn_current', 0)
  put(own, 'burn_minutes', 0)
elseif minute > last_minute then
  local finished = num(own, 'burn_current')
  local baseline = own.f.burn_ewma
  local idle = minute - last_minute - 1
  local ewma = baseline
  if own.f.abuse_active ~= 1 then
    ewma = baseline and (EWMA_ALPHA * finished + (1 - EWMA_ALPHA) * baseline) or finished
  end
  if idle > 0 then
    ewma = ewma * (1 - EWMA_ALPHA) ^ math.min(idle, 1000)
  end
  put(own, 'burn_ewma', ewma)
  put(own, 'burn_minutes', num(own, 'burn_minutes') + minute - last_minute)
  put(own, 'burn_minute', minute)
  put(own, 'burn_current', 0)
  if own.f.abuse_active == 1 and (idle > 0 or finished <= abuse_factor * (baseline or 0)) then
    put(own, 'abuse_active', 0)
    alert(alerts, request_id .. ':abuse-cleared', 'abuse_cleared', own,
      'rate_per_minute', fmt(idle > 0 and 0 or finished))
  end
end

-- 1. Rate limits (and the abuse throttle while it applies): read every window, note the
--    tightest one and how long a refusal must wait.
local specs = {}
for i = 1, tonumber(ARGV[17]) do
  specs[i] = {KEYS[16 + i], tonumber(ARGV[16 + 2 * i]), tonumber(ARGV[17 + 2 * i]), 'rate_limit'}
end
if own.f.abuse_active == 1 and throttle > 0 then
  specs[#specs + 1] = {KEYS[15], 60000, throttle, 'abuse_throttle'}
end
local windows = {}
local shown_limit, shown_remaining, shown_reset, retry_after = -1, -1, 0, 0
local refusal = 'rate_limit'
for i, spec in ipairs(specs) do
  local key, period, limit = spec[1], spec[2], spec[3]
  local width = period / BUCKETS
  local current = math.floor(now / width)
  local flat = redis.call('HGETALL', key)
  local used, oldest, newest = 0, current, current
  for j = 1, #flat, 2 do
    local index = tonumber(flat[j])
    if index < current - BUCKETS then
      redis.call('HDEL', key, flat[j])
    else
      used = used + tonumber(flat[j + 1])
      oldest, newest = math.min(oldest, index), math.max(newest, index)
    end
  end
  if used + 1 > limit then
    -- Wait until enough old buckets have left the window to admit one more request.
    local counts = {}
    for j = 1, #flat, 2 do
      counts[tonumber(flat[j])] = tonumber(flat[j + 1])
    end
    local freed, wait = 0, 0
    for index = oldest, newest do
      freed = freed + (counts[index] or 0)
      wait = (index + BUCKETS + 1) * width - now
      if used - freed + 1 <= limit then
        break
      end
    end
    if wait > retry_after then
      retry_after, refusal = wait, spec[4]
      shown_limit, shown_remaining, shown_reset = limit, 0, wait
    end
  elseif retry_after == 0 and (shown_limit < 0 or limit - used - 1 < shown_remaining) then
    -- Capacity comes back when the oldest counted bucket leaves the window.
    shown_limit, shown_remaining = limit, limit - used - 1
    shown_reset = (oldest + BUCKETS + 1) * width - now
  end
  windows[i] = {key, fmt(current), fmt(period + width)}
end

-- What the parent may still give this member: its balance, within the member's caps.
local function parent_room()
  if not parent then
    return 0
  end
  local room = math.max(spendable(parent), 0)
  for _, p in ipairs(PERIODS) do
    local cap = own.f[p.member_cap]
    if cap then
      room = math.min(room, math.max(cap - num(own, p.drawn), 0))
    end
  end
  return room
end

local function spent(w, p)
  return num(w, p.spent) + num(w, p.drawn)
end

-- A spending cap alert, once per cap and period.
local function cap_alert(w, p, enforcement)
  local period_id = num(w, p.id)
  if w.f[p.alerted] ~= period_id then
    put(w, p.alerted, period_id)
    alert(alerts, request_id .. ':cap:' .. w.name .. ':' .. p.name, 'spending_cap', w,
      'cap', p.name, 'limit', fmt(w.f[p.cap]), 'spent', fmt(spent(w, p)),
      'enforcement', enforcement)
  end
end

local room = parent_room()
local reported = spendable(own) + room

if retry_after > 0 then
  redis.call('HINCRBY', own.state, 'refused_rate_limit', 1)
  return finish({429, cost, reported, shown_limit, 0, shown_reset, retry_after, 0, refusal})
end

-- 2. Credits and budgets (a free request passes even when an overdraft took the balance
--    below zero, and is never stopped by a cap).
local from_own = math.min(cost, math.max(spendable(own), 0))
local from_parent = cost - from_own
-- Overage (plans.lua): what neither the wallet nor its parent covers is served on credit when
-- the wallet's overage allowance for the period holds it.
local overage = 0
if from_parent > 0 and own.f.overage_max then
  overage = plan_tools().overage_needed(own, from_parent, room)
  from_parent = from_parent - overage
end
local reason = ''
if cost > 0 then
  if from_parent > 0 and (not parent or from_parent > math.max(spendable(parent), 0)) then
    reason = 'credits'
  elseif from_parent > room then
    for _, p in ipairs(PERIODS) do
      local cap = own.f[p.member_cap]
      if reason == '' and cap and num(own, p.drawn) + from_parent > cap then
        reason = 'member_cap:' .. p.name
      end
    end
  end
  for _, p in ipairs(PERIODS) do
    local cap = own.f[p.cap]
    if cap and spent(own, p) + cost > cap then
      if own.f.cap_soft ~= 1 then
        cap_alert(own, p, 'hard')
        reason = reason ~= '' and reason or 'cap:' .. p.name
      end
    end
    cap = parent and parent.f[p.cap]
    if cap and from_parent > 0 and spent(parent, p) + from_parent > cap
        and parent.f.cap_soft ~= 1 then
      cap_alert(parent, p, 'hard')
      reason = reason ~= '' and reason or 'parent_cap:' .. p.name
    end
  end
end
if reason ~= '' then
  local counter = reason == 'credits' and 'refused_credits' or 'refused_budget'
  redis.call('HINCRBY', own.state, counter, 1)
  return finish({402, cost, reported, shown_limit, shown_remaining, shown_reset, 0, 0, reason})
end

-- 3. Admitted: take rate-limit capacity, charge, record, alert.
local own_before, parent_before = spendable(own), parent and spendable(parent)  -- plans.lua
for _, w in ipairs(windows) do
  -- A new bucket sets the window's time to live: the key outlives its newest bucket.
  if redis.call('HINCRBY', w[1], w[2], 1) == 1 then
    redis.call('PEXPIRE', w[1], w[3])
  end
end
local burned_own = hold_ms > 0 and {} or nil  -- what a settle may give back
local burned_parent = hold_ms > 0 and {} or nil
if from_own > 0 then
  burn(own, from_own, burned_own)
end
if from_parent > 0 then
  burn(parent, from_parent, burned_parent)
end
if overage > 0 then
  plan_tools().take_overage(own, overage, request_id)
end
for _, p in ipairs(PERIODS) do
  if from_own > 0 then
    put(own, p.spent, num(own, p.spent) + from_own)
  end
  if from_parent > 0 then
    put(own, p.drawn, num(own, p.drawn) + from_parent)
    put(parent, p.spent, num(parent, p.spent) + from_parent)
  end
end

if cost > 0 then
  local current = num(own, 'burn_current') + cost
  put(own, 'burn_current', current)
  local baseline = own.f.burn_ewma
  if abuse_factor > 0 and own.f.abuse_active ~= 1 and baseline
      and num(own, 'burn_minutes') >= warmup and current >= min_rate
      and current > abuse_factor * baseline then
    put(own, 'abuse_active', 1)
    alert(alerts, request_id .. ':abuse', 'abuse', own, 'rate_per_minute', fmt(current),
      'baseline_per_minute', string.format('%.2f', baseline), 'factor', ARGV[13],
      'throttle_per_minute', fmt(throttle))
  end
  local function alert_charged(w)
    alert_thresholds(alerts, request_id, w)
    for _, p in ipairs(PERIODS) do
      if w.f[p.cap] and spent(w, p) >= w.f[p.cap] then
        cap_alert(w, p, w.f.cap_soft == 1 and 'soft' or 'hard')
      end
    end
  end
  alert_charged(own)
  if from_parent > 0 then
    alert_charged(parent)
  end
  balance_alerts(alerts, request_id, own, own_before)  -- plans.lua
  if from_parent > 0 then
    balance_alerts(alerts, request_id, parent, parent_before)
  end
end

local balance = reported - cost
if hold_ms > 0 then
  redis.call('HSET', KEYS[13], 'reserved', fmt(cost), 'burned', table.concat(burned_own, ';'),
    'parent_burned', table.concat(burned_parent, ';'), 'from_parent', fmt(from_parent),
    'wallet', ARGV[6], 'parent', ARGV[12], 'consumer', ARGV[7], 'route', ARGV[8],
    'service', ARGV[9], 'method', ARGV[10], 'path', ARGV[11], 'timestamp', own.now_s)
  if overage > 0 then  -- plans.lua: what a lower settle gives back first
    redis.call('HSET', KEYS[13], 'overage', fmt(overage))
  end
  redis.call('PEXPIRE', KEYS[13], hold_ms + LAPSED_HOLD_KEPT_MS)
  redis.call('ZADD', KEYS[16], now + hold_ms, request_id)
  ledger_add(own, 'hold', request_id, -from_own, spendable(own))
else
  local event = {'event_id', request_id, 'wallet', ARGV[6], 'consumer', ARGV[7],
    'route', ARGV[8], 'service', ARGV[9], 'method', ARGV[10], 'path', ARGV[11],
    'cost', fmt(cost), 'timestamp', own.now_s}
  if from_parent > 0 then
    event[#event + 1], event[#event + 2] = 'parent', ARGV[12]
    event[#event + 1], event[#event + 2] = 'parent_cost', fmt(from_parent)
  end
  if overage > 0 then  -- plans.lua: served on credit, to be invoiced
    event[#event + 1], event[#event + 2] = 'overage', fmt(overage)
  end
  redis.call('XADD', KEYS[11], '*', unpack(event))
  ledger_add(own, 'charge', request_id, -from_own, spendable(own))
end
if from_parent > 0 then
  ledger_add(parent, hold_ms > 0 and 'hold' or 'charge', request_id .. '@' .. ARGV[6],
    -from_parent, spendable(parent))
end

local reply = {200, cost, balance, shown_limit, shown_remaining, shown_reset, 0, 0, ''}
if answer_ttl > 0 then
  redis.call('SET', KEYS[12], encode_reply(reply), 'PX', answer_ttl)
end
return finish(reply)
