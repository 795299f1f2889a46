-- Shared wallet functions, prepended to every script by scripts/__init__.py.
--
-- Units: credits are integers (Lua numbers are doubles: every amount stays below 2^53, and no
-- money path divides); time is in milliseconds since the Unix epoch.
--
-- Wallet layout (keys.py): `state` HASH (fields below), `remaining` HASH grant id -> credits
-- left (below zero by the shortfall of a void: void.lua), `burn` ZSET of live grants with credits left (score 0, member text
-- "PPPPPPPPPP:EEEEEEEEEEEEEEE:SSSSSSSSSSSS:<grant id>" = priority, expiry ms, sequence, each
-- zero-padded to a width its largest accepted value fits, so lexical order is burn order),
-- `expiry` ZSET of the same members scored by expiry ms. Members are read back by pattern,
-- never at fixed offsets, so no field's width can shift the grant id.
-- Invariant: state.balance == sum of `remaining` over members of `burn`.
--
-- A wallet is opened once per script (one HGETALL of its state: cheaper than naming the
-- fields, as a wallet has only those it uses), changed in memory through `put`, and written
-- back once by `save`.

local MEMBER_FORMAT = '%010d:%015d:%012d:'  -- then the grant id
local MEMBER_PATTERN = '^%d+:(%d+):%d+:(.+)$'  -- captures expiry ms, grant id
local MAX_EXPIRY = 253402300799999  -- 9999-12-31T23:59:59.999Z, the latest accepted expiry
local NO_EXPIRY = 999999999999999  -- after every expiry: never-expiring grants burn last
local NO_EXPIRY_13 = 9999999999999  -- how grants written before 15-digit expiries say "never"
local LEDGER_MAXLEN = 1000
local ALERTS_MAXLEN = 100000

-- State fields: balance, overdraft, granted, alerted_pct, thresholds (the one text field),
-- cap_day, cap_month, cap_soft, member_cap_day, member_cap_month, day_id, spent_day,
-- drawn_day, cap_alerted_day, month_id, spent_month, drawn_month, cap_alerted_month,
-- burn_minute, burn_current, burn_ewma, burn_minutes, abuse_active, next_expiry (read by the
-- scripts), seq and refused_* (counters only written). An absent field reads as 0 / unset.
local DEFAULT_THRESHOLD_PCTS = {50, 75, 90, 100}

-- Spending periods and their state fields, spelled out once: no field name is built by
-- concatenation on the hot path.
local PERIODS = {
  {name = 'day', id = 'day_id', cap = 'cap_day', spent = 'spent_day', drawn = 'drawn_day',
   member_cap = 'member_cap_day', alerted = 'cap_alerted_day'},
  {name = 'month', id = 'month_id', cap = 'cap_month', spent = 'spent_month',
   drawn = 'drawn_month', member_cap = 'member_cap_month', alerted = 'cap_alerted_month'},
}

local format = string.format

-- Plans (plans.lua, sent after this file): the renewal open_wallet runs when a wallet's paid
-- period has ended. Declared here so that open_wallet can call it.
local renew_plan

local function fmt(n)
  return format('%d', n)
end

-- The grant id and expiry ms (nil for a never-expiring grant) of a burn-order member.
local function member_grant(member)
  local expires, id = string.match(member, MEMBER_PATTERN)
  expires = tonumber(expires)
  if expires == NO_EXPIRY or expires == NO_EXPIRY_13 then
    expires = nil
  end
  return id, expires
end

-- A reply kept for idempotent retries: integers each followed by a comma, then an optional
-- text after '|' (authorize's refusal reason). decode_reply(encode_reply(r)) == r.
-- One string.format call: this runs for every admitted request.
local function encode_reply(reply)
  local n = #reply
  if type(reply[n]) == 'string' then
    return format(string.rep('%d,', n - 1) .. '|%s', unpack(reply))
  end
  return format(string.rep('%d,', n), unpack(reply))
end

local function decode_reply(text)
  local reply = {}
  for value in string.gmatch(string.match(text, '^[^|]*'), '[^,]+') do
    reply[#reply + 1] = tonumber(value)
  end
  local reason = string.match(text, '|(.*)$')
  if reason then
    reply[#reply + 1] = reason
  end
  return reply
end

local function server_now_ms(requested)
  local now = tonumber(requested)
  if now and now > 0 then
    return now
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Calendar month of a day number (days since 1970-01-01, UTC) as year * 12 + month - 1.
-- Howard Hinnant's civil_from_days, in integer arithmetic.
local function month_of_day(day)
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return year * 12 + month - 1
end

local function put(w, field, value)
  w.f[field] = value
  w.dirty[field] = true
end

local function num(w, field)
  return w.f[field] or 0
end

local function ledger_add(w, kind, ref, amount, balance)
  redis.call('XADD', w.ledger, 'MAXLEN', '~', LEDGER_MAXLEN, '*',
    'type', kind, 'ref', ref, 'amount', fmt(amount), 'balance', fmt(balance), 'ts', w.now_s)
end

-- Whether a ledger holds a charge or hold of `ref` in its entries since `since_ms` (newest
-- first; the ledger keeps about LEDGER_MAXLEN entries, so this reads at most that many).
local function ledger_has(ledger, ref, since_ms)
  for _, entry in ipairs(redis.call('XREVRANGE', ledger, '+', fmt(math.max(since_ms, 0)))) do
    local f = entry[2]
    if f[1] == 'type' and (f[2] == 'charge' or f[2] == 'hold') and f[3] == 'ref'
        and f[4] == ref then
      return true
    end
  end
  return false
end

-- Drop grants whose expiry has passed: their credits leave the balance (and the amount the
-- used-share alerts count as granted) for good. `next_expiry` (the soonest expiry of a live
-- grant, 0 = none) spares the look-up on every other call.
local function sweep_expired(w)
  local expired = redis.call('ZRANGEBYSCORE', w.expiry, '-inf', w.now)
  for _, member in ipairs(expired) do
    local id = member_grant(member)
    local left = tonumber(redis.call('HGET', w.remaining, id) or '0')
    redis.call('ZREM', w.burn, member)
    redis.call('ZREM', w.expiry, member)
    if left > 0 then
      put(w, 'balance', num(w, 'balance') - left)
      put(w, 'granted', num(w, 'granted') - left)
      ledger_add(w, 'expire', id, -left, num(w, 'balance') - num(w, 'overdraft'))
    end
  end
  local soonest = redis.call('ZRANGE', w.expiry, 0, 0, 'WITHSCORES')
  put(w, 'next_expiry', soonest[2] and tonumber(soonest[2]) or 0)
end

-- A grant with an expiry went (back) into the wallet: keep `next_expiry` the soonest.
local function note_expiry(w, expires)
  local soonest = num(w, 'next_expiry')
  if soonest == 0 or expires < soonest then
    put(w, 'next_expiry', expires)
  end
end

-- Credit grant `id` of `amount` to wallet w, burning at `priority`, expiring at `expires` ms
-- (0 = never): unpaid overdraft is paid from it first, the rest joins the burn order and the
-- balance. Returns what joined the balance. (grant.lua, and plans.lua's allowances.)
local function add_grant(w, id, amount, priority, expires)
  local repay = math.min(num(w, 'overdraft'), amount)
  if repay > 0 then
    put(w, 'overdraft', num(w, 'overdraft') - repay)
  end
  local left = amount - repay
  redis.call('HSET', w.remaining, id, fmt(left))
  if left > 0 then
    local seq = redis.call('HINCRBY', w.state, 'seq', 1)
    local member = format(MEMBER_FORMAT, priority, expires > 0 and expires or NO_EXPIRY, seq)
      .. id
    redis.call('ZADD', w.burn, 0, member)
    if expires > 0 then
      redis.call('ZADD', w.expiry, expires, member)
      note_expiry(w, expires)
    end
    put(w, 'balance', num(w, 'balance') + left)
  end
  put(w, 'granted', num(w, 'granted') + amount)
  return left
end

-- Open a wallet from 5 consecutive KEYS (state, remaining, burn, expiry, ledger) at `first`.
-- With `alerts` (the shard's alert stream), a plan whose period ended is renewed now.
local function open_wallet(name, first, now, alerts)
  local w = {name = name, state = KEYS[first], remaining = KEYS[first + 1],
             burn = KEYS[first + 2], expiry = KEYS[first + 3], ledger = KEYS[first + 4],
             now = now, now_s = fmt(now), f = {}, dirty = {}}
  local flat = redis.call('HGETALL', w.state)
  local f = w.f
  for i = 1, #flat, 2 do
    local field = flat[i]
    local value = flat[i + 1]
    f[field] = tonumber(value) or value  -- text fields: thresholds, plan, plan_last
  end
  local soonest = num(w, 'next_expiry')
  if soonest > 0 and soonest <= now then
    sweep_expired(w)
  end
  -- Spending counters are per calendar day and month (UTC); a new period starts at zero.
  -- The month only changes with the day, so it is worked out once a day.
  local day = math.floor(now / 86400000)
  if f.day_id ~= day then
    put(w, 'day_id', day)
    put(w, 'spent_day', 0)
    put(w, 'drawn_day', 0)
    local month = month_of_day(day)
    if f.month_id ~= month then
      put(w, 'month_id', month)
      put(w, 'spent_month', 0)
      put(w, 'drawn_month', 0)
    end
  end
  -- One table look-up for a wallet without a plan; one comparison for one with a plan.
  if f.plan and alerts and now >= num(w, 'plan_end') and name ~= '' then
    renew_plan(w, alerts)
  end
  return w
end

local function save(w)
  local args = {}
  for field in pairs(w.dirty) do
    local v = w.f[field]
    args[#args + 1] = field
    args[#args + 1] = type(v) == 'number' and (v == math.floor(v) and fmt(v) or tostring(v)) or v
  end
  if #args > 0 then
    redis.call('HSET', w.state, unpack(args))
  end
  w.dirty = {}
end

-- Open a wallet (KEYS 1-5) and its parent (KEYS 6-10) unless `parent_name` is ''; the
-- returned `finish(reply)` writes both back and returns the reply. `alerts`: see open_wallet.
local function open_family(name, parent_name, now, alerts)
  local own = open_wallet(name, 1, now, alerts)
  local parent = parent_name ~= '' and open_wallet(parent_name, 6, now, alerts) or nil
  local function finish(reply)
    save(own)
    if parent then
      save(parent)
    end
    return reply
  end
  return own, parent, finish
end

-- Balance available to spend: live credits minus what settles left unpaid.
local function spendable(w)
  return num(w, 'balance') - num(w, 'overdraft')
end

-- Burn `amount` across live grants in burn order; the caller checked that they cover it.
-- With a `taken` list, appends "member=amount" per grant burned, so that a later settle can
-- give credits back to the same grants (a hold).
local function burn(w, amount, taken)
  local need = amount
  while need > 0 do
    local members = redis.call('ZRANGE', w.burn, 0, 3)
    if #members == 0 then
      break
    end
    for _, member in ipairs(members) do
      local id = member_grant(member)
      local left = tonumber(redis.call('HGET', w.remaining, id) or '0')
      local take = math.min(left, need)
      if take > 0 then
        redis.call('HINCRBY', w.remaining, id, -take)
        if taken then
          taken[#taken + 1] = member .. '=' .. fmt(take)
        end
        need = need - take
      end
      if left - take <= 0 then
        redis.call('ZREM', w.burn, member)
        redis.call('ZREM', w.expiry, member)
      end
      if need == 0 then
        break
      end
    end
  end
  put(w, 'balance', num(w, 'balance') - (amount - need))
end

-- Give `burned` ("member=amount;...", grant ids never hold ';' or '=': grant.lua) back to
-- the grants it came from, last burned first, up to `amount`. A grant that expired meanwhile
-- forfeits its share, as it would have anyway. Never raises: settle has written already.
local function refund(w, burned, amount)
  local taken = {}
  for member, taken_amount in string.gmatch(burned, '([^;]+)=(%d+)') do
    taken[#taken + 1] = {member, tonumber(taken_amount)}
  end
  for i = #taken, 1, -1 do
    if amount == 0 then
      break
    end
    local member = taken[i][1]
    local give = math.min(taken[i][2], amount)
    amount = amount - give
    local id, expires = member_grant(member)
    if id and (not expires or expires > w.now) then
      -- A voided grant's remaining is below zero by its shortfall (void.lua): what comes
      -- back pays that first, and only the rest returns to the balance.
      local back = math.min(give, redis.call('HINCRBY', w.remaining, id, give))
      if back > 0 then
        redis.call('ZADD', w.burn, 0, member)
        if expires then
          redis.call('ZADD', w.expiry, expires, member)
          note_expiry(w, expires)
        end
        put(w, 'balance', num(w, 'balance') + back)
      end
    end
  end
end

-- Alerts go to the shard's alert stream; `id` is unique (the webhook's idempotency key).
local function alert(stream, id, kind, w, ...)
  redis.call('XADD', stream, 'MAXLEN', '~', ALERTS_MAXLEN, '*', 'alert_id', id, 'type', kind,
    'wallet', w.name, 'balance', fmt(spendable(w)), 'timestamp', w.now_s, ...)
end

-- Emit one alert per used-percentage threshold crossed since the last alert; a top-up that
-- brings the used share back down re-arms the thresholds above it (see grant.lua).
local function alert_thresholds(stream, id, w)
  local granted = num(w, 'granted')
  if granted <= 0 then
    return
  end
  local used = granted - spendable(w)
  local alerted = num(w, 'alerted_pct')
  local highest = alerted
  local pcts = DEFAULT_THRESHOLD_PCTS
  if w.f.thresholds then
    pcts = {}
    for text in string.gmatch(w.f.thresholds, '%d+') do
      pcts[#pcts + 1] = tonumber(text)
    end
  end
  for _, pct in ipairs(pcts) do
    if pct > alerted and used * 100 >= pct * granted then
      alert(stream, id .. ':' .. w.name .. ':used:' .. pct, 'balance_threshold', w,
        'threshold_pct', fmt(pct),
        'granted', fmt(granted))
      highest = math.max(highest, pct)
    end
  end
  if highest > alerted then
    put(w, 'alerted_pct', highest)
  end
end
