--[=[
claim: a worker takes a scheduled instance (scheduled -> running) under a lease (E5).

Keys: all session keys; writes inst, idx, outbox, leases, meta.
ARGV[5] instance name
ARGV[6] lease token (random, chosen by the worker)
ARGV[7] lease length in ms
ARGV[8] actualKwargs: the exact kwargs the task will receive (raw JSON, merged by the worker
        from the instance kwargs and the task's withParams, E1)
ARGV[9] config version the worker merged from (defs.v); "" to skip the check
Returns cjson {state = ...}:
  claimed    -> token, attempt (1 for the first run), expires (ms), sessionId (meta sid: the
                incarnation of the session, part of the HTTP task's Idempotency-Key)
  not_due    -> wait (ms): the instance is cooling down (retry cooldown, G6 done right)
  busy       -> another worker holds a live lease (duplicate message): do nothing
  stale      -> the task was reconfigured since the worker read it: read and merge again
  done       -> status: the instance is no longer waiting to run (duplicate message): nothing
A running instance whose lease expired is claimed again: same instance, attempt + 1.
]=]
local name, token, lease_ms = ARGV[5], ARGV[6], tonumber(ARGV[7])
local rec, err = instance_or_error(name)
if err then return err end

if rec.status == 'scheduled' then
  local due = tonumber(redis.call('ZSCORE', K.outbox, name) or '0')
  if due > NOW then return cjson.encode({state = 'not_due', wait = due - NOW}) end
elseif rec.status == 'running' then
  if rec.lease and rec.lease.exp > NOW then
    return cjson.encode({state = 'busy', expires = rec.lease.exp})
  end
else
  return cjson.encode({state = 'done', status = rec.status})
end
if ARGV[9] ~= '' then
  local def = load_def(rec.task)
  if def and tostring(def.v) ~= ARGV[9] then return cjson.encode({state = 'stale'}) end
end

touch()
local old = rec.status
local attempt = (rec.lease and rec.lease.attempt or tonumber(rec.meta.attempt or '0') or 0) + 1
if old ~= 'running' then set_status(rec, 'running') end
rec.meta.actualKwargs = ARGV[8]
rec.meta.attempt = tostring(attempt)
rec.lease = {token = token, exp = NOW + lease_ms, attempt = attempt}
save_instance(name, rec, old)
redis.call('ZADD', K.leases, NOW + lease_ms, name)
apply_ttl()
return cjson.encode({state = 'claimed', token = token, attempt = attempt, expires = NOW + lease_ms,
  sessionId = redis.call('HGET', K.meta, 'sid')})
