-- renew: bring a wallet up to date before it is read (kong-credits balance, plan): sweep
-- expired grants and materialise its plan's current period, as authorize and settle do.
--
-- KEYS (one slot): 1-5 the wallet (state, remaining, burn, expiry, ledger)  6 alerts
-- ARGV: 1 wallet  2 now ms (0 = server time)
-- Reply: now ms, the time the wallet was brought up to (the reader's "now").

local now = server_now_ms(ARGV[2])
local w = open_wallet(ARGV[1], 1, now, KEYS[6])
save(w)
return now
