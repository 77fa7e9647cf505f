--[=[
setStatus: put an instance in a status (H3 for operators and external workers; F6/F7 for a
running task that chooses its own end, which presents its lease token).

Keys: all session keys; writes inst, idx, outbox, leases, meta, and what a fire writes.
ARGV[5] instance name
ARGV[6] status (one of the eight of I1; Python validated it)
ARGV[7] metadata: cjson map key -> raw JSON, shallow-merged
ARGV[8] "1" to fire the cascade (the task's name) whatever the status
ARGV[9] cascade kwargs (raw JSON object text)
ARGV[10] lease token, or "" for an operator (no transition check, as H3)
Indexes follow the status: unstarted rejoins the instances that absorb fires (it is evaluated
at the next relevant fire, D14); scheduled enters the outbox so a worker (or the external
runner) picks it up; leaving running drops the lease. Entering failed emits the
instanceFailed event (an operator, an external worker, an instance whose runner is unknown),
as fail.lua and retry.lua do.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name, status, token = ARGV[5], ARGV[6], ARGV[10]
local rec, err = instance_or_error(name)
if err then return err end
if not STATUSES[status] then
  return fail_with('INVALID', 'status: unknown status ' .. status)
end
if token ~= '' then
  local stale = check_lease(name, rec, token)
  if stale then return stale end
end

local outcome = new_outcome()
touch()
if token == '' then log_event('operator', {action = 'status', instance = name, status = status}) end
local old = rec.status
for key, raw in pairs(cjson.decode(ARGV[7])) do rec.meta[key] = raw end
if status == 'scheduled' and old ~= 'scheduled' then
  schedule(name, rec, old, NOW) -- into the outbox, for its runner, as a fire would
else
  set_status(rec, status)
  save_instance(name, rec, old)
end
if status == 'failed' and old ~= 'failed' then -- every way into failed tells subscribers
  emit_event('instanceFailed:' .. name .. ':' .. NOW)
end
if ARGV[8] == '1' then fire(rec.task, ARGV[9], outcome) end
return finish(outcome, {instance = name})
