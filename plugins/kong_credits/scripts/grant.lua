-- grant: add credits to a wallet, once per grant id (a retried top-up changes nothing).
--
-- KEYS (one slot): 1-5 the wallet (state, remaining, burn, expiry, ledger)  6 grants
--   7 (optional) the shard's wallet index, which gains the wallet's name (ARGV 8)
-- ARGV: 1 grant id (1..200 of A-Z a-z 0-9 _ - . : @ /)  2 amount (1..10^15)
--   3 priority (0..999999999, lower burns first)  4 expires at ms (0 = never, at most
--   MAX_EXPIRY)  5 now ms (0 = server time)  6 grant JSON to store
--   7 largest balance a wallet may hold  8 the wallet's name (with KEYS 7)
-- Reply: {created (1, or 0 when the id exists), credits added to the balance, balance}
--
-- Every argument is checked before anything is written (wallets.py checks them first, with
-- friendlier messages): the burn-order member packs them into fixed widths, and holds list
-- grants separated by ';' and '='.
-- Unpaid overdraft (see settle.lua) is paid from the new grant first. The grant re-arms the
-- used-percentage alerts above the wallet's new used share.

local id, amount = ARGV[1], tonumber(ARGV[2])
local priority, expires = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = server_now_ms(ARGV[5])
local grants = KEYS[6]

local function whole(n, low, high)
  return n and n == math.floor(n) and n >= low and n <= high
end
if #id > 200 or not string.find(id, '^[A-Za-z0-9_%.:@/%-]+$') then
  return redis.error_reply('ERR grant id must be 1..200 of A-Z a-z 0-9 _ - . : @ /')
end
if not (whole(amount, 1, 1e15) and whole(priority, 0, 999999999)
    and whole(expires, 0, MAX_EXPIRY)) then
  return redis.error_reply('ERR amount, priority or expiry out of range')
end
if redis.call('HEXISTS', grants, id) == 1 then
  return {0, 0, tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
    - tonumber(redis.call('HGET', KEYS[1], 'overdraft') or '0')}
end
if expires > 0 and expires <= now then
  return redis.error_reply('ERR grant expires before it starts: expires_at is in the past')
end
local w = open_wallet('', 1, now)
if num(w, 'balance') + amount > tonumber(ARGV[7]) then
  return redis.error_reply('ERR wallet balance would exceed ' .. ARGV[7] .. ' credits')
end

redis.call('HSET', grants, id, ARGV[6])
local left = add_grant(w, id, amount, priority, expires)
local granted = num(w, 'granted')
local used_pct = math.floor((granted - spendable(w)) * 100 / granted)
if num(w, 'alerted_pct') > used_pct then
  put(w, 'alerted_pct', math.max(used_pct, 0))
end
save(w)
if KEYS[7] then
  redis.call('ZADD', KEYS[7], 0, ARGV[8])
end
ledger_add(w, 'grant', id, amount, spendable(w))
return {1, left, spendable(w)}
