--[=[
redeliver: deliver a webhook again by hand, whatever happened before (same id, same body).

Keys: all session keys; writes deliveries and delivery_due (applies the session TTL).
ARGV[5] delivery id
Starts a new chain: the delivery is pending, its next attempt due now; messages of the older
chain (a retry scheduled before) become stale, and an attempt in progress is recorded but no
longer decides what follows (take moves on). So there is only ever one chain of attempts.
Returns the new chain number; 0 when there is no such delivery.
]=]
local id = ARGV[5]
local raw = redis.call('HGET', K.deliveries, id)
if not raw then return 0 end
local rec = cjson.decode(raw)
rec.chain, rec.take, rec.state = rec.chain + 1, rec.take + 1, 'pending'
redis.call('HSET', K.deliveries, id, cjson.encode(rec))
redis.call('ZADD', K.delivery_due, NOW, id)
log_event('operator', {action = 'redeliver', delivery = id})
apply_ttl()
return rec.chain
