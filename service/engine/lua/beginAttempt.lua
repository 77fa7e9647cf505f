--[=[
beginAttempt: a worker takes the due attempt of a webhook delivery (service/webhooks/store.py).

Keys: all session keys; writes deliveries and delivery_due (applies the session TTL).
ARGV[5] delivery id
ARGV[6] the chain of the message ("0": any, a message from before chains existed). A manual
        redelivery starts a new chain; messages of an older chain are stale and do nothing, so
        a redelivery during a scheduled retry never makes two chains of attempts.
ARGV[7] hold in ms: the attempt's deadline. Its due time moves that far ahead, so a duplicate
        message does nothing meanwhile, and the sweeper re-sends it only if this worker died.
Returns cjson {state = ...}:
  go       -> take (this attempt's number: finishAttempt applies its outcome only if no
              newer attempt or redelivery came since), chain, url, body, attempts (so far),
              secret (the subscription's own signing secret, when it has one)
  not_due  -> wait (ms): a retry not due yet, or an attempt in progress
  stale    -> the message belongs to an older chain
  done     -> state: delivered or failed (or nothing due): nothing to do
  gone     -> no such delivery (the session was deleted or expired)
]=]
local id, chain, hold = ARGV[5], tonumber(ARGV[6]) or 0, tonumber(ARGV[7])
local raw = redis.call('HGET', K.deliveries, id)
if not raw then return cjson.encode({state = 'gone'}) end
local rec = cjson.decode(raw)
if chain ~= 0 and chain ~= rec.chain then return cjson.encode({state = 'stale'}) end
local due = redis.call('ZSCORE', K.delivery_due, id)
if rec.state == 'delivered' or rec.state == 'failed' or not due then
  return cjson.encode({state = 'done', status = rec.state})
end
if tonumber(due) > NOW then
  return cjson.encode({state = 'not_due', wait = tonumber(due) - NOW})
end
rec.take = rec.take + 1
redis.call('HSET', K.deliveries, id, cjson.encode(rec))
redis.call('ZADD', K.delivery_due, NOW + hold, id)
apply_ttl()
return cjson.encode({
  state = 'go', take = rec.take, chain = rec.chain, url = rec.url, body = rec.body,
  attempts = #rec.attempts, secret = rec.secret,
})
