-- Shared wallet functions, prepended to every script by engine.py (one EVALSHA each).
--
-- Units: credits are integers (Lua numbers are doubles: every amount stays below 2^53, nothing
-- is divided); time is in milliseconds since the Unix epoch.
--
-- Wallet layout (keys.py): `state` HASH {balance, overdraft, seq, refused_*}, `remaining` HASH
-- grant id -> credits left, `burn` ZSET of live grants with credits left (score 0, member text
-- "PPPPPPPPPP:EEEEEEEEEEEEE:SSSSSSSSSSSS:<grant id>" = priority, expiry ms, sequence, so lexical
-- order is burn order), `expiry` ZSET of the same members scored by expiry ms.
-- Invariant: state.balance == sum of `remaining` over members of `burn`.

local GRANT_ID_AT = 39  -- first character of the grant id in a burn member
local LEDGER_MAXLEN = 1000

local function fmt(n)
  return string.format('%d', n)
end

local function server_now_ms(requested)
  local now = tonumber(requested)
  if now and now > 0 then
    return now
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ledger_add(ledger, kind, ref, amount, balance, now)
  redis.call('XADD', ledger, 'MAXLEN', '~', LEDGER_MAXLEN, '*',
    'type', kind, 'ref', ref, 'amount', fmt(amount), 'balance', fmt(balance), 'ts', fmt(now))
end

-- Drop grants whose expiry has passed: their credits leave the balance for good.
local function sweep_expired(state, remaining, burn, expiry, ledger, now)
  local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  for _, member in ipairs(expired) do
    local id = string.sub(member, GRANT_ID_AT)
    local left = tonumber(redis.call('HGET', remaining, id) or '0')
    redis.call('ZREM', burn, member)
    redis.call('ZREM', expiry, member)
    if left > 0 then
      local balance = redis.call('HINCRBY', state, 'balance', -left)
      ledger_add(ledger, 'expire', id, -left, balance, now)
    end
  end
end

-- Balance available to spend: live credits minus what settles left unpaid.
local function spendable(state)
  local v = redis.call('HMGET', state, 'balance', 'overdraft')
  return tonumber(v[1] or '0') - tonumber(v[2] or '0')
end

-- Burn `amount` across live grants in burn order; the caller checked that they cover it.
-- Returns "member=taken;..." so a later settle can give credits back to the same grants.
local function burn(state, remaining, burn_order, expiry, amount)
  local taken = {}
  local need = amount
  while need > 0 do
    local members = redis.call('ZRANGE', burn_order, 0, 3)
    if #members == 0 then
      break
    end
    for _, member in ipairs(members) do
      local id = string.sub(member, GRANT_ID_AT)
      local left = tonumber(redis.call('HGET', remaining, id) or '0')
      local take = math.min(left, need)
      if take > 0 then
        redis.call('HINCRBY', remaining, id, -take)
        taken[#taken + 1] = member .. '=' .. fmt(take)
        need = need - take
      end
      if left - take <= 0 then
        redis.call('ZREM', burn_order, member)
        redis.call('ZREM', expiry, member)
      end
      if need == 0 then
        break
      end
    end
  end
  local burned = amount - need
  if burned > 0 then
    redis.call('HINCRBY', state, 'balance', -burned)
  end
  return table.concat(taken, ';'), need
end
