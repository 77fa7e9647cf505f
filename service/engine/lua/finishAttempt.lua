--[=[
finishAttempt: record an attempt of a webhook delivery and what follows it, in one step
(service/webhooks/store.py).

Keys: all session keys; writes deliveries and delivery_due (applies the session TTL).
ARGV[5] delivery id
ARGV[6] take: the number beginAttempt gave this attempt
ARGV[7] the attempt, cjson {at, status, error, durationMs}
ARGV[8] the state it leads to: delivered, failed or retrying
ARGV[9] retrying: ms until the next attempt is due
The attempt is always recorded (it happened). Its outcome (state, next due time) applies only
when no newer attempt or manual redelivery took the delivery since (take unchanged).
Returns cjson {result = applied | recorded | gone, chain}.
]=]
local WEBHOOK_EVENTS = {
  delivered = 'webhookDelivered', failed = 'webhookFailed', retrying = 'webhookRetrying',
}
local id, take = ARGV[5], tonumber(ARGV[6])
local raw = redis.call('HGET', K.deliveries, id)
if not raw then return cjson.encode({result = 'gone'}) end
local rec = cjson.decode(raw)
local attempts = rec.attempts
if type(attempts) ~= 'table' then attempts = {} end
attempts[#attempts + 1] = cjson.decode(ARGV[7])
rec.attempts = attempts
local result = 'recorded'
if rec.take == take then
  result = 'applied'
  rec.state = ARGV[8]
  if rec.state == 'retrying' then
    redis.call('ZADD', K.delivery_due, NOW + tonumber(ARGV[9]), id)
  else
    redis.call('ZREM', K.delivery_due, id)
  end
  log_event(WEBHOOK_EVENTS[rec.state],
    {delivery = id, event = rec.type, status = attempts[#attempts].status})
end
redis.call('HSET', K.deliveries, id, cjson.encode(rec))
apply_ttl()
return cjson.encode({result = result, chain = rec.chain})
