-- settle: charge the actual price of a request whose credits were held at authorize.
--
-- KEYS (wallet shard slot): 1 state  2 remaining  3 burn  4 expiry  5 ledger  6 events
--   7 reservation
-- ARGV: 1 request id  2 actual cost (credits)  3 now ms (0 = server time)  4 answer ttl ms
--   5 HTTP status of the response ("" when unknown)
-- Reply: {status, cost, balance, unpaid, replayed}: status 200 settled, 404 no such hold
--   (never held, already expired, or settled longer ago than the answer ttl).
--
-- Rules: an actual cost below the hold gives the difference back to the grants it was taken
-- from, last burned first (a grant that expired meanwhile forfeits its share, as it would
-- have). An actual cost above the hold burns the extra from live grants; what they cannot
-- cover is recorded as overdraft, so the balance goes below zero by at most the part of the
-- settled price that exceeded what the wallet held. Overdraft is paid from the next grants.
-- The rated event is appended here, with the actual cost and the held estimate.

local EXPIRY_AT, EXPIRY_LEN, NO_EXPIRY = 12, 13, 9999999999999

local request_id, actual = ARGV[1], tonumber(ARGV[2])
local now = server_now_ms(ARGV[3])
local state, remaining, burn_order, expiry, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local hold = redis.call('HGETALL', KEYS[7])
if #hold == 0 then
  return {404, actual, spendable(state), 0, 0}
end
local h = {}
for i = 1, #hold, 2 do
  h[hold[i]] = hold[i + 1]
end
if h.settled then
  local reply = {}
  for value in string.gmatch(h.settled, '[^,]+') do
    reply[#reply + 1] = tonumber(value)
  end
  reply[5] = 1
  return reply
end

sweep_expired(state, remaining, burn_order, expiry, ledger, now)
local reserved = tonumber(h.reserved)
local unpaid = 0
if actual < reserved then
  local refund = reserved - actual
  local taken = {}
  for part in string.gmatch(h.burned, '[^;]+') do
    taken[#taken + 1] = part
  end
  for i = #taken, 1, -1 do
    if refund == 0 then
      break
    end
    local member, amount = string.match(taken[i], '^(.*)=(%d+)$')
    local give = math.min(tonumber(amount), refund)
    refund = refund - give
    local expires = tonumber(string.sub(member, EXPIRY_AT, EXPIRY_AT + EXPIRY_LEN - 1))
    if expires > now then
      local id = string.sub(member, GRANT_ID_AT)
      redis.call('HINCRBY', remaining, id, give)
      redis.call('ZADD', burn_order, 0, member)
      if expires ~= NO_EXPIRY then
        redis.call('ZADD', expiry, expires, member)
      end
      redis.call('HINCRBY', state, 'balance', give)
    end
  end
elseif actual > reserved then
  local extra = actual - reserved
  local live = tonumber(redis.call('HGET', state, 'balance') or '0')
  local covered = math.min(math.max(live, 0), extra)
  if covered > 0 then
    burn(state, remaining, burn_order, expiry, covered)
  end
  unpaid = extra - covered
  if unpaid > 0 then
    redis.call('HINCRBY', state, 'overdraft', unpaid)
  end
end

local balance = spendable(state)
redis.call('XADD', KEYS[6], '*', 'event_id', request_id, 'wallet', h.wallet,
  'consumer', h.consumer, 'route', h.route, 'service', h.service, 'method', h.method,
  'path', h.path, 'cost', fmt(actual), 'timestamp', h.timestamp, 'reserved', h.reserved,
  'status', ARGV[5])
ledger_add(ledger, 'settle', request_id, reserved - actual, balance, now)

local reply = {200, actual, balance, unpaid, 0}
local text = {}
for i, value in ipairs(reply) do
  text[i] = fmt(value)
end
redis.call('DEL', KEYS[7])
redis.call('HSET', KEYS[7], 'settled', table.concat(text, ','))
redis.call('PEXPIRE', KEYS[7], tonumber(ARGV[4]))
return reply
