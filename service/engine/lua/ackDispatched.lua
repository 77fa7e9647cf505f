--[=[
ackDispatched: a runner whose hand-over is final (webhooks, once the deliveries are recorded)
took these entries; drop them from the outbox. (Entries for Dramatiq stay until the claim
removes them. A due entry of a runner settled at commit, `external`, never enters the outbox:
lib.lua schedule(); this script still acknowledges the ones the sweeper re-sends.)

Keys: all session keys; writes outbox only. Not idempotency-aware (repeating it is harmless).
ARGV[5..] instance names or event members ("@..."). An entry whose due time is still in the
future (a retry cooling down) stays: the sweeper hands it over when it is due.
Returns the number of entries removed.
]=]
local removed = 0
for i = 5, NARGV do
  local due = redis.call('ZSCORE', K.outbox, ARGV[i])
  if due and tonumber(due) <= NOW then
    removed = removed + redis.call('ZREM', K.outbox, ARGV[i])
  end
end
return removed
