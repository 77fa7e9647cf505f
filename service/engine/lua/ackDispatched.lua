--[=[
ackDispatched: the caller handed these instances to the broker; drop them from the outbox.

Keys: all session keys; writes outbox only. Not idempotency-aware (repeating it is harmless).
ARGV[5..] instance names. An entry whose due time is still in the future (a retry cooling
down) stays: the sweeper hands it over when it is due.
Returns the number of entries removed.
]=]
local removed = 0
for i = 5, #ARGV do
  local due = redis.call('ZSCORE', K.outbox, ARGV[i])
  if due and tonumber(due) <= NOW then
    removed = removed + redis.call('ZREM', K.outbox, ARGV[i])
  end
end
return removed
