--[=[
sweepSession: what the sweeper must hand to workers again in one session (DESIGN.md section 2).

Keys: all session keys; reads outbox, leases, inst, defs; writes outbox (the due time of each
entry it returns moves to now, so an entry is re-sent at most once per grace period even when
workers are merely slow).
ARGV[5] grace in ms: an outbox entry is stranded when it has been due for longer than this
        (its caller died between the script and the enqueue, or the message was lost).
Returns cjson {stranded = [[name, runner, due]], expired = [[name, runner, due]],
outbox = number of entries, leases = number of leases}. `expired` are running instances whose
lease ran out (their worker died): a new message lets claim take them again, attempt + 1.
]=]
local grace = tonumber(ARGV[5]) or 0
local function entries(key, max_score)
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', key, '-inf', max_score, 'WITHSCORES', 'LIMIT', 0, 500)
  for i = 1, #found, 2 do
    local rec = load_instance(found[i])
    if string.sub(found[i], 1, 1) == '@' then -- an event waiting for its delivery to be queued
      out[#out + 1] = {found[i], 'webhooks', tonumber(found[i + 1])}
      redis.call('ZADD', key, 'XX', NOW, found[i])
    elseif rec then
      out[#out + 1] = {found[i], runner_of(load_def(rec.task)), tonumber(found[i + 1])}
      if key == K.outbox then redis.call('ZADD', key, 'XX', NOW, found[i]) end
    end
  end
  return out
end
return cjson.encode({
  stranded = entries(K.outbox, NOW - grace),
  expired = entries(K.leases, NOW),
  outbox = redis.call('ZCARD', K.outbox),
  leases = redis.call('ZCARD', K.leases),
})
