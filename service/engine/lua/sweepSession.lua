--[=[
sweepSession: what the sweeper must hand to workers again in one session, and when the session
next needs the sweeper (DESIGN.md section 2; the pending index is scored by that time).

Keys: all session keys; reads outbox, leases, inst, defs, deliveries, delivery_due; writes
outbox, leases and delivery_due scores only (never a status): each entry it returns is
re-stamped so that it is returned again at most once per grace period, even when workers are
merely slow or a queue has a backlog. With work outstanding it applies the session TTL, so a
session is not expired while the sweeper keeps re-sending its work.
ARGV[5] grace in ms: an outbox entry or a webhook delivery is stranded when it has been due for
        longer than this (its caller died between the script and the enqueue, or the message
        was lost, e.g. a Dramatiq delayed message across a Redis restart).
Returns cjson {
  stranded = [[name, runner, due, scheduled]]: outbox entries due for longer than grace
             (re-stamped to now: claim still finds them due, the next re-send waits another
             grace period; due is the score before, the previous stamp after a first visit);
  expired = [[name, runner, lease expiry]]: running instances whose lease ran out (their worker
            died): a new message lets claim take them again, attempt + 1 (their score in
            leases moves to now + grace; claim reads the record's lease, not that score);
  deliveries = [[delivery id, chain]]: webhook deliveries whose attempt has been due for
               longer than grace (re-stamped to now);
  next = ms: when the session next needs the sweeper (earliest outbox due + grace, earliest
         lease expiry, earliest delivery due + grace); absent when nothing is outstanding;
  later = ms: the same without the stranded entries just re-stamped (absent: nothing else
          outstanding): the sweeper may watch those later when their messages are all still
          queued behind a backlog (service/worker/sweeper.py);
  outbox, leases = number of entries }.
At most LIMIT entries of each kind per call: the rest stay due and `next` says so.
]=]
local grace = tonumber(ARGV[5]) or 0
local LIMIT = 500

local restamped = {} -- names of the stranded outbox entries this call re-stamps

local function stranded()
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', K.outbox, '-inf', NOW - grace, 'WITHSCORES',
    'LIMIT', 0, LIMIT)
  for i = 1, #found, 2 do
    local name, due = found[i], tonumber(found[i + 1])
    local rec = nil
    if string.sub(name, 1, 1) == '@' then -- an event waiting for its deliveries to be recorded
      out[#out + 1] = {name, 'webhooks', due}
    else
      rec = load_instance(name)
      if rec then
        out[#out + 1] = {name, runner_of(load_def(rec.task)), due, rec.ts.scheduled or 0}
      end
    end
    if rec or string.sub(name, 1, 1) == '@' then
      redis.call('ZADD', K.outbox, 'XX', NOW, name)
      restamped[name] = true
    else
      redis.call('ZREM', K.outbox, name) -- its instance is gone: nothing to send, ever
    end
  end
  return out
end

local function expired()
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, LIMIT)
  for _, name in ipairs(found) do
    local rec = load_instance(name)
    if rec and rec.status == 'running' and rec.lease then
      out[#out + 1] = {name, runner_of(load_def(rec.task)), rec.lease.exp}
      redis.call('ZADD', K.leases, 'XX', NOW + math.max(grace, 1), name)
    else
      redis.call('ZREM', K.leases, name) -- not running any more: no lease to watch
    end
  end
  return out
end

local function due_deliveries()
  local out = {}
  local found = redis.call('ZRANGEBYSCORE', K.delivery_due, '-inf', NOW - grace, 'LIMIT', 0, LIMIT)
  for _, id in ipairs(found) do
    local raw = redis.call('HGET', K.deliveries, id)
    if raw then
      out[#out + 1] = {id, cjson.decode(raw).chain or 0}
      redis.call('ZADD', K.delivery_due, 'XX', NOW, id)
    else
      redis.call('ZREM', K.delivery_due, id)
    end
  end
  return out
end

local function earliest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return nil
end

local result = {stranded = stranded(), expired = expired(), deliveries = due_deliveries()}
local next_at = nil
local function consider(at)
  if at and (next_at == nil or at < next_at) then next_at = at end
end
local first_out = earliest(K.outbox)
consider(first_out and first_out + grace)
consider(earliest(K.leases))
local first_delivery = earliest(K.delivery_due)
consider(first_delivery and first_delivery + grace)
result.next = next_at

-- The earliest outbox entry other than the re-stamped ones: at most #re-stamped + 1 read.
local function earliest_other_outbox()
  local count = 0
  for _ in pairs(restamped) do count = count + 1 end
  local found = redis.call('ZRANGE', K.outbox, 0, count, 'WITHSCORES')
  for i = 1, #found, 2 do
    if not restamped[found[i]] then return tonumber(found[i + 1]) end
  end
  return nil
end
local later = nil
local function consider_later(at)
  if at and (later == nil or at < later) then later = at end
end
local other_out = earliest_other_outbox()
consider_later(other_out and other_out + grace)
consider_later(earliest(K.leases))
consider_later(first_delivery and first_delivery + grace)
result.later = later
-- Outstanding work keeps the session alive between visits (TTL setting on; see apply_ttl).
if next_at then apply_ttl(math.max(OUTSTANDING_HOLD, math.ceil(2 * grace / 1000))) end
result.outbox = redis.call('ZCARD', K.outbox)
result.leases = redis.call('ZCARD', K.leases)
return cjson.encode(result)
