--[=[
claim: a worker takes a scheduled instance (scheduled -> running) under a lease (E5), and reads
in the same step what it needs to run it: one script per claim in the common case.

Keys: all session keys; writes inst, idx, outbox, leases, meta.
ARGV[5] instance name
ARGV[6] lease token (random, chosen by the worker)
ARGV[7] lease length in ms
ARGV[8] actualKwargs: "" to let the script build them; else the exact kwargs the task will
        receive (raw JSON, merged by the worker from the instance kwargs and the task's
        withParams, E1, after a `merge` answer)
ARGV[9] config version the worker merged from (defs.v); "" to skip the check
The script builds actualKwargs itself when E1 needs no merge: the task has no withParams, so
the kwargs are the instance's, spliced from their raw JSON texts (Lua never decodes user JSON:
cjson would round numbers to 14 digits and turn [] into {}). When the task has withParams it
answers `merge` (nothing written) and the worker merges in Python and claims again with them.
Returns {answer, record, config, version}: answer is cjson {state = ...}:
  claimed    -> token, attempt (1 for the first run), expires (ms), sessionId (meta s: the
                incarnation of the session, part of the HTTP task's Idempotency-Key);
                record = the instance record after the claim (its meta.actualKwargs is what the
                task receives), config = the task's raw configuration (false: not configured)
  merge      -> record (as it is), config, version (defs.v): merge and claim again with them
  not_due    -> wait (ms): the instance is cooling down (retry cooldown, G6 done right)
  busy       -> another worker holds a live lease (duplicate message): do nothing
  stale      -> the task was reconfigured since the worker read it: claim again
  done       -> status: the instance is no longer waiting to run (duplicate message): nothing
A running instance whose lease expired is claimed again: same instance, attempt + 1.
]=]
local name, token, lease_ms = ARGV[5], ARGV[6], tonumber(ARGV[7])
local rec, err = instance_or_error(name)
if err then return err end

local function reply(answer, record, config, version)
  return {cjson.encode(answer), record or false, config or false, version or false}
end

-- Whether the raw task configuration has a non-empty withParams. Configurations are stored as
-- compact JSON: every `"withParams":{}` is empty; any other occurrence is decoded to be sure
-- (decoded, never re-encoded).
local function has_params(config)
  if not config then return false end
  local at = 1
  while true do
    local first, last = string.find(config, '"withParams"', at, true)
    if not first then return false end
    if string.sub(config, last + 1, last + 3) ~= ':{}' then
      local ok, decoded = pcall(cjson.decode, config)
      return not ok or type(decoded.withParams) ~= 'table' or next(decoded.withParams) ~= nil
    end
    at = last + 1
  end
end

if rec.status == 'scheduled' then
  local due = tonumber(redis.call('ZSCORE', K.outbox, name) or '0')
  if due > NOW then return reply({state = 'not_due', wait = due - NOW}) end
elseif rec.status == 'running' then
  if rec.lease and rec.lease.exp > NOW then
    return reply({state = 'busy', expires = rec.lease.exp})
  end
else
  return reply({state = 'done', status = rec.status})
end

local config = task_config(rec.task) or nil
local actual = ARGV[8]
if actual == '' then
  if has_params(config) then
    local def = load_def(rec.task)
    return reply({state = 'merge'}, redis.call('HGET', K.inst, name), config,
      def and tostring(def.v))
  end
  actual = raw_object(rec.kwargs)
elseif ARGV[9] ~= '' then
  local def = load_def(rec.task)
  if def and tostring(def.v) ~= ARGV[9] then return reply({state = 'stale'}) end
end

touch()
local old = rec.status
local attempt = (rec.lease and rec.lease.attempt or tonumber(rec.meta.attempt or '0') or 0) + 1
if old ~= 'running' then set_status(rec, 'running') end
rec.meta.actualKwargs = actual
rec.meta.attempt = tostring(attempt)
rec.lease = {token = token, exp = NOW + lease_ms, attempt = attempt}
save_instance(name, rec, old)
redis.call('ZADD', K.leases, NOW + lease_ms, name)
apply_ttl()
return reply({state = 'claimed', token = token, attempt = attempt, expires = NOW + lease_ms,
  sessionId = redis.call('HGET', K.meta, 's')}, redis.call('HGET', K.inst, name), config)
