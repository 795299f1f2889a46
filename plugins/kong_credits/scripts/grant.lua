-- grant: add credits to a wallet, once per grant id (a retried top-up changes nothing).
--
-- KEYS (wallet shard slot): 1 state  2 grants  3 remaining  4 burn  5 expiry  6 ledger
-- ARGV: 1 grant id  2 amount  3 priority (0..999999999, lower burns first)
--   4 expires at ms (0 = never)  5 now ms (0 = server time)  6 grant JSON to store
--   7 largest balance a wallet may hold
-- Reply: {created (1, or 0 when the id exists), credits added to the balance, balance}
--
-- Unpaid overdraft (see settle.lua) is paid from the new grant first.

local NO_EXPIRY = 9999999999999

local id, amount = ARGV[1], tonumber(ARGV[2])
local priority, expires = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = server_now_ms(ARGV[5])
local state, grants, remaining, burn_order, expiry, ledger =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

if redis.call('HEXISTS', grants, id) == 1 then
  return {0, 0, spendable(state)}
end
if expires > 0 and expires <= now then
  return redis.error_reply('ERR grant expires before it starts: expires_at is in the past')
end
sweep_expired(state, remaining, burn_order, expiry, ledger, now)
local live = tonumber(redis.call('HGET', state, 'balance') or '0')
if live + amount > tonumber(ARGV[7]) then
  return redis.error_reply('ERR wallet balance would exceed ' .. ARGV[7] .. ' credits')
end

local overdraft = tonumber(redis.call('HGET', state, 'overdraft') or '0')
local repay = math.min(overdraft, amount)
if repay > 0 then
  redis.call('HINCRBY', state, 'overdraft', -repay)
end
local left = amount - repay
local seq = redis.call('HINCRBY', state, 'seq', 1)
local expires_key = expires > 0 and expires or NO_EXPIRY
local member = string.format('%010d:%013d:%012d:', priority, expires_key, seq) .. id

redis.call('HSET', grants, id, ARGV[6])
redis.call('HSET', remaining, id, fmt(left))
if left > 0 then
  redis.call('ZADD', burn_order, 0, member)
  if expires > 0 then
    redis.call('ZADD', expiry, expires, member)
  end
  redis.call('HINCRBY', state, 'balance', left)
end
local balance = spendable(state)
ledger_add(ledger, 'grant', id, amount, balance, now)
return {1, left, balance}
