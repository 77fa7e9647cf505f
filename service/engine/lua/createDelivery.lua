--[=[
createDelivery: record a new webhook delivery and make its first attempt due now, in one step
(service/webhooks/store.py). A crash right after it loses nothing: the sweeper finds the due
attempt (delivery_due) and sends it.

Keys: all session keys; writes deliveries and delivery_due (applies the session TTL).
ARGV[5] delivery id
ARGV[6] the delivery, cjson {url, type, body, created}
Returns 1 when created; 0 when a delivery with this id exists already (a re-dispatched event)
or the session does not exist (deleted: nothing to deliver for it).
]=]
local id = ARGV[5]
if not session_exists() or redis.call('HEXISTS', K.deliveries, id) == 1 then return 0 end
local rec = cjson.decode(ARGV[6])
rec.state, rec.attempts, rec.chain, rec.take = 'pending', {}, 1, 0
redis.call('HSET', K.deliveries, id, cjson.encode(rec))
redis.call('ZADD', K.delivery_due, NOW, id)
apply_ttl()
return 1
