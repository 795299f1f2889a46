-- void: take back what remains of a grant (all of it, or part), once per void key.
--
-- KEYS (one slot): 1-5 the wallet (state, remaining, burn, expiry, ledger)  6 grants
--   7 voids (grant id -> credits voided so far, shortfall included)
--   8 void replies ("<grant id>|<void key>" -> the reply, for idempotent retries)
-- ARGV: 1 grant id  2 void key ('' = none: the reply is not kept)
--   3 mode: 'all' (what is not voided yet), 'amount' (ARGV 4 more credits) or 'total'
--     (until ARGV 4 credits of the grant are voided in all: Stripe reports refunds
--     cumulatively, so an older or repeated refund asks for nothing more)
--   4 credits (1..10^15; unused by 'all')  5 now ms (0 = server time)  6 reason (ledger text)
-- Reply: {status (200, or 404 when the wallet has no such grant), replayed, voided,
--   shortfall, credits left in the grant, balance}
--
-- Rules: a void asks for `ask` credits, never more than the grant's amount minus what
-- earlier voids asked for. It takes what the grant still holds (an expired grant holds
-- nothing), up to `ask`; the rest was already spent and is the shortfall, written to the
-- ledger. The grant's `remaining` becomes what it held minus `ask`, below zero by the
-- shortfall: credits a settle gives back to the grant later (a hold that cost less, see
-- wallet.lua `refund`) pay that first, so a void can never be undone by a refund of a
-- request in flight. The balance never goes below what it was minus what the grant held.

local id, key, mode = ARGV[1], ARGV[2], ARGV[3]
local credits = tonumber(ARGV[4])
local now = server_now_ms(ARGV[5])
local grants, voids, replies = KEYS[6], KEYS[7], KEYS[8]

if mode ~= 'all' and not (credits and credits == math.floor(credits)
    and credits >= 1 and credits <= 1e15) then
  return redis.error_reply('ERR credits to void must be a whole number 1..10^15')
end
local reply_field = id .. '|' .. key
if key ~= '' then
  local kept = redis.call('HGET', replies, reply_field)
  if kept then
    local reply = decode_reply(kept)
    reply[2] = 1
    return reply
  end
end
local record = redis.call('HGET', grants, id)
if not record then
  return {404, 0, 0, 0, 0, tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
    - tonumber(redis.call('HGET', KEYS[1], 'overdraft') or '0')}
end

local g = cjson.decode(record)
local amount = g.amount
local expires = type(g.expires_at_ms) == 'number' and g.expires_at_ms or nil
local asked_before = tonumber(redis.call('HGET', voids, id) or '0')
local ask
if mode == 'all' then
  ask = amount - asked_before
elseif mode == 'amount' then
  ask = math.min(credits, amount - asked_before)
else
  ask = math.min(credits, amount) - asked_before
end
ask = math.max(ask, 0)

local w = open_wallet('', 1, now)  -- sweeps grants that expired, this one included
local expired = expires ~= nil and expires <= now
local left = tonumber(redis.call('HGET', w.remaining, id) or '0')
local held = expired and 0 or math.max(left, 0)
local voided = math.min(ask, held)
local shortfall = ask - voided

-- The burn-order member of this grant: its priority and expiry prefix are in the record,
-- only its sequence number is not, so look among the members with that prefix (digits
-- follow it, and every digit sorts before ';').
local function remove_member()
  local prefix = format(MEMBER_FORMAT, g.priority, expires or NO_EXPIRY, 0):sub(1, 27)
  local members = redis.call('ZRANGEBYLEX', w.burn, '[' .. prefix, '(' .. prefix .. ';')
  if #members == 0 then  -- a member written before 15-digit expiries: look at them all
    members = redis.call('ZRANGE', w.burn, 0, -1)
  end
  for _, member in ipairs(members) do
    if member_grant(member) == id then
      redis.call('ZREM', w.burn, member)
      redis.call('ZREM', w.expiry, member)
    end
  end
end

if ask > 0 then
  if not expired then
    redis.call('HSET', w.remaining, id, fmt(left - ask))
    if held > 0 and left - ask <= 0 then
      remove_member()
    end
  end
  if voided > 0 then
    put(w, 'balance', num(w, 'balance') - voided)
    put(w, 'granted', math.max(num(w, 'granted') - voided, 0))
  end
  redis.call('HSET', voids, id, fmt(asked_before + ask))
  redis.call('XADD', w.ledger, 'MAXLEN', '~', LEDGER_MAXLEN, '*',
    'type', 'void', 'ref', id, 'amount', fmt(-voided), 'balance', fmt(spendable(w)),
    'ts', w.now_s, 'shortfall', fmt(shortfall), 'reason', ARGV[6])
end
save(w)
local reply = {200, 0, voided, shortfall, math.max(held - voided, 0), spendable(w)}
if key ~= '' then
  redis.call('HSET', replies, reply_field, encode_reply(reply))
end
return reply
