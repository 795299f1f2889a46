-- Plans, overage and balance alerts: shared functions sent after wallet.lua (scripts/__init__.py).
--
-- Units as in wallet.lua: credits are integers below 2^53, time is ms since the Unix epoch, UTC.
--
-- Plan fields of the wallet's state HASH (three, as every field costs every script call that
-- opens the wallet): `plan`, set by plans.py, the terms as text "allowance,every,anchor,
-- rollover_max,priority[,...]" (every: 1 day, 2 week, 3 month; anchor ms: periods start at
-- its time of day, weekday or day of month); written here when a period is materialised:
-- `plan_end` (ms, that period's end) and `plan_last`, "renewal number,start ms,allowance
-- granted,rollover granted,priority". Grants of renewal n are `plan#n` (the allowance) and
-- `rollover#n` (what the last period left, up to rollover_max); both expire at the period's
-- end. '#' is not allowed in a
-- grant id (grant.lua), so no top-up can take these ids.
--
-- Invariant: a period is materialised at most once: renew_plan runs only when now has
-- reached plan_end, and sets plan_end to the end of the period it grants, in the same script.
--
-- Overage fields: overage_max (present: postpaid up to this many credits a period),
-- overage_used, overage_period (the period overage_used counts: its start with a plan, else
-- the calendar month's id). Alert fields: low_balance (threshold), low_alerted (1 once
-- alerted), overrun_day (day of the last projected_overrun alert).

local DAY_MS = 86400000
local PLAN_EVERY_WEEK, PLAN_EVERY_MONTH = 2, 3
local MAX_BALANCE = 4503599627370496  -- 2^52, money.MAX_BALANCE: a wallet holds at most this

-- The plan machinery, built on first use and kept for the rest of the script call: every
-- function defined at a script's top level is a new closure on every call (~0.1 us each), so
-- the hot path pays for three (plan_tools, renew_plan, balance_alerts), not all of these.
local plan_tools_built
local function plan_tools()
  if plan_tools_built then
    return plan_tools_built
  end
  -- The number and start ms of the wallet's last renewal (0, 0 before the first).
  local function last_renewal(w)
    local seq, start = string.match(w.f.plan_last or '', '^(%d+),(%d+)')
    return tonumber(seq) or 0, tonumber(start) or 0
  end

  -- Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
  local function days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local mp = m > 2 and m - 3 or m + 9
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
  end

  -- First day (days since epoch) of month `index` = year * 12 + month - 1 (as month_of_day).
  local function first_day_of_month(index)
    return days_from_civil(math.floor(index / 12), index % 12 + 1, 1)
  end

  -- Start ms of the period of a monthly plan in month `index`: the anchor's day of month
  -- (`dom`), or the month's last day when the month is shorter, at time of day `tod` ms.
  local function month_period_start(index, dom, tod)
    local first = first_day_of_month(index)
    local length = first_day_of_month(index + 1) - first
    return (first + math.min(dom, length) - 1) * DAY_MS + tod
  end

  -- The period (start ms, end ms) of a plan that holds `now`.
  local function plan_period(every, anchor, now)
    if every == PLAN_EVERY_MONTH then
      local anchor_day = math.floor(anchor / DAY_MS)
      local tod = anchor - anchor_day * DAY_MS
      local dom = anchor_day - first_day_of_month(month_of_day(anchor_day)) + 1
      local index = month_of_day(math.floor(now / DAY_MS))
      local start = month_period_start(index, dom, tod)
      if start > now then
        index = index - 1
        start = month_period_start(index, dom, tod)
      end
      return start, month_period_start(index + 1, dom, tod)
    end
    local length = every == PLAN_EVERY_WEEK and 7 * DAY_MS or DAY_MS
    local start = anchor + math.floor((now - anchor) / length) * length
    return start, start + length
  end

  -- Add a grant that expires at `expires` (as grant.lua does, without its grants record: the
  -- plan's grants are described by the state fields). Unpaid overdraft is paid first; the
  -- balance never passes MAX_BALANCE. Returns the credits granted.
  local function add_plan_grant(w, id, amount, priority, expires, kind)
    amount = math.max(math.min(amount, MAX_BALANCE - num(w, 'balance')), 0)
    if amount == 0 then
      return 0
    end
    add_grant(w, id, amount, priority, expires)
    ledger_add(w, kind, id, amount, spendable(w))
    return amount
  end

  -- Materialise the period that holds w.now: the allowance, plus what the last materialised
  -- period left unused (its grants expired at its end, so the sweep has taken them out of the
  -- balance; their `remaining` entries still say what was left) up to the terms' rollover_max.
  -- A wallet idle for several periods gets only the current one. Then one alert.
  local function renew(w, alerts)
    local f = w.f
    local allowance, every, anchor, rollover_max, priority = string.match(f.plan,
      '^(%d+),(%d+),(%d+),(%d+),(%d+)')
    if not allowance then
      return  -- not terms plans.py writes: leave the wallet as it is
    end
    allowance, priority = tonumber(allowance), tonumber(priority)
    local start, stop = plan_period(tonumber(every), tonumber(anchor), w.now)
    if stop > MAX_EXPIRY then
      return
    end
    local seq = last_renewal(w)
    local carry = 0
    if seq > 0 then
      local allowance_id, rollover_id = 'plan#' .. fmt(seq), 'rollover#' .. fmt(seq)
      local left = redis.call('HMGET', w.remaining, allowance_id, rollover_id)
      carry = math.min(tonumber(rollover_max),
        (tonumber(left[1]) or 0) + (tonumber(left[2]) or 0))
      redis.call('HDEL', w.remaining, allowance_id, rollover_id)
    end
    seq = seq + 1
    local carried = 0
    if carry > 0 then
      carried = add_plan_grant(w, 'rollover#' .. fmt(seq), carry, priority, stop, 'rollover')
    end
    local granted = add_plan_grant(w, 'plan#' .. fmt(seq), allowance, priority, stop,
      'allowance')
    put(w, 'plan_end', stop)
    put(w, 'plan_last', format('%d,%d,%d,%d,%d', seq, start, granted, carried, priority))
    -- A renewal is a top-up: it re-arms the used-share and low-balance alerts below it.
    local total = num(w, 'granted')
    if total > 0 then
      local used_pct = math.floor((total - spendable(w)) * 100 / total)
      if num(w, 'alerted_pct') > used_pct then
        put(w, 'alerted_pct', math.max(used_pct, 0))
      end
    end
    if f.low_alerted == 1 and f.low_balance and spendable(w) >= f.low_balance then
      put(w, 'low_alerted', 0)
    end
    alert(alerts, 'allowance:' .. w.name .. ':' .. fmt(seq), 'allowance_renewed', w,
      'allowance', fmt(granted), 'rollover', fmt(carried), 'period_start', fmt(start),
      'period_end', fmt(stop))
  end

  -- Overage -----------------------------------------------------------------------------------

  -- The period overage is counted in: the plan's, else the calendar month.
  local function overage_period(w)
    if w.f.plan then
      local _, start = last_renewal(w)
      return start
    end
    return num(w, 'month_id')
  end

  -- Credits the wallet may still be served on credit this period (0: overage refused).
  local function overage_left(w)
    local most = w.f.overage_max
    if not most then
      return 0
    end
    if w.f.overage_period ~= overage_period(w) then
      return most
    end
    return math.max(most - num(w, 'overage_used'), 0)
  end

  -- What of `short` (credits the wallet's own balance does not cover) must be served on credit,
  -- when `covered` of it comes from elsewhere (the parent): that part if the overage allowance
  -- holds it whole, else 0 (and the request is refused for credits as usual).
  local function overage_needed(w, short, covered)
    local need = short - covered
    if need <= 0 or not w.f.overage_max or need > overage_left(w) then
      return 0
    end
    return need
  end

  -- Count `amount` served on credit against this period's overage allowance.
  local function count_overage(w, amount)
    local period = overage_period(w)
    if w.f.overage_period ~= period then
      put(w, 'overage_period', period)
      put(w, 'overage_used', 0)
    end
    put(w, 'overage_used', num(w, 'overage_used') + amount)
  end

  -- Serve `amount` on credit: overdraft (the next grant repays it first), counted as spent so
  -- that hard caps see it, and in the ledger.
  local function take_overage(w, amount, ref)
    count_overage(w, amount)
    put(w, 'overdraft', num(w, 'overdraft') + amount)
    for _, p in ipairs(PERIODS) do
      put(w, p.spent, num(w, p.spent) + amount)
    end
    ledger_add(w, 'overage', ref, -amount, spendable(w))
  end

  -- A settle below the hold gives back up to `amount` of the overage it held. Returns what it
  -- gave back (overdraft a grant repaid meanwhile is not given back twice).
  local function give_back_overage(w, amount, ref)
    local back = math.min(amount, num(w, 'overdraft'))
    if back <= 0 then
      return 0
    end
    put(w, 'overdraft', num(w, 'overdraft') - back)
    put(w, 'overage_used', math.max(num(w, 'overage_used') - back, 0))
    for _, p in ipairs(PERIODS) do
      put(w, p.spent, math.max(num(w, p.spent) - back, 0))
    end
    ledger_add(w, 'overage', ref, back, spendable(w))
    return back
  end

  -- End ms of the calendar month that holds the wallet's day (open_wallet keeps month_id).
  local function month_end(w)
    return first_day_of_month(num(w, 'month_id') + 1) * DAY_MS
  end

  plan_tools_built = {renew = renew, plan_period = plan_period, overage_left = overage_left,
    overage_needed = overage_needed, count_overage = count_overage,
    take_overage = take_overage, give_back_overage = give_back_overage, month_end = month_end}
  return plan_tools_built
end

renew_plan = function(w, alerts)
  plan_tools().renew(w, alerts)
end

-- Balance alerts ----------------------------------------------------------------------------

-- After a charge that took the wallet from `before` to its balance now:
-- low_balance, once per crossing below the threshold (a balance found at or above it before
-- the charge, after a top-up, re-arms it);
-- projected_overrun, at most once a day, when the burn rate (authorize.lua's per-minute
-- average) would empty the wallet before its period ends (the plan's, else the month's), or
-- pass its monthly cap before the month ends. Looked at on the first charge of each minute
-- (overrun_minute): the average changes once a minute, and a projection over days can wait
-- that long, so the other charges pay one comparison.
local function balance_alerts(alerts, id, w, before)
  local f = w.f
  local threshold = f.low_balance
  if threshold then
    if before >= threshold and f.low_alerted == 1 then
      put(w, 'low_alerted', 0)
    end
    if spendable(w) < threshold and f.low_alerted ~= 1 then
      put(w, 'low_alerted', 1)
      alert(alerts, id .. ':' .. w.name .. ':low_balance', 'low_balance', w,
        'threshold', fmt(threshold))
    end
  end
  local rate = f.burn_ewma
  local minute = math.floor(w.now / 60000)
  if not rate or f.overrun_minute == minute or f.overrun_day == f.day_id then
    return
  end
  put(w, 'overrun_minute', minute)
  if rate <= 0 then
    return
  end
  local tools = plan_tools()
  local stop = f.plan and num(w, 'plan_end') or tools.month_end(w)
  local projected = math.floor(rate * (stop - w.now) / 60000)
  local reason
  if projected > spendable(w) + tools.overage_left(w) then
    reason = 'balance'
  elseif f.cap_month then
    stop = tools.month_end(w)
    projected = math.floor(rate * (stop - w.now) / 60000)
    if num(w, 'spent_month') + num(w, 'drawn_month') + projected > f.cap_month then
      reason = 'cap:month'
    end
  end
  if reason then
    put(w, 'overrun_day', f.day_id)
    alert(alerts, w.name .. ':overrun:' .. fmt(f.day_id), 'projected_overrun', w,
      'reason', reason, 'burn_rate_per_minute', format('%.2f', rate),
      'projected', fmt(projected), 'period_end', fmt(stop))
  end
end
