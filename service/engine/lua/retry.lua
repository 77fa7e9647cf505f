--[=[
retry: the running task asks to run again later (section G), in one atomic step.

Keys: all session keys; writes inst, idx, leases, defs (instance counts), outbox, meta.
ARGV[5] instance name, ARGV[6] lease token
ARGV[7] cooldown in seconds (number, may be 0)
ARGV[8] replacement kwargs: "" keeps the instance's, else cjson map trigger -> raw JSON (G7, H1)
ARGV[9] metadata to write on the parent: cjson map key -> raw JSON (G3), may be "{}"
ARGV[10] cause exceptionType ("" for none), ARGV[11] exceptionInfo, ARGV[12] exceptionContext
        (raw JSON object text)
ARGV[13] log level
ARGV[14] most instances the session may hold (TRIGGERS_MAX_INSTANCES; "0" or absent: no limit):
        a retry whose clone would pass it is refused (LIMIT) before any write
Budget (G2): depth >= the task's maxRetries -> failed, exceptionType
"triggers.MaxRetriesExceeded", exceptionContext.replay_metadata = what would have been written.
Otherwise (G3) the parent ends replayed (failed metadata + cooldown kept on it) and its clone
(parent, depth + 1) is scheduled with its due time = now + cooldown in the outbox, so no worker
starts it earlier (claim answers not_due): the cooldown of G6, applied.
Returns: the outcome, with retried (bool), clone (name) and due (ms).
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name, token = ARGV[5], ARGV[6]
local cooldown = tonumber(ARGV[7]) or 0
local rec, err = instance_or_error(name)
if err then return err end
local stale = check_lease(name, rec, token)
if stale then return stale end

local def = load_def(rec.task)
local max_retries = def and def.maxRetries or 0
local depth = tonumber(rec.meta.depth or '0') or 0
local metadata = cjson.decode(ARGV[9])
metadata.cooldown = ARGV[7]
if ARGV[10] ~= '' then
  metadata.exceptionType = cjson.encode(ARGV[10])
  metadata.exceptionInfo = cjson.encode(ARGV[11])
  metadata.exceptionContext = ARGV[12]
end

if depth < max_retries then
  local too_many = instance_limit_error(1, tonumber(ARGV[14]) or 0)
  if too_many then return too_many end
end

local outcome = new_outcome()
touch()
if depth >= max_retries then
  set_status(rec, 'failed')
  rec.meta.exceptionType = cjson.encode('triggers.MaxRetriesExceeded')
  rec.meta.exceptionInfo = cjson.encode('retry limit reached: maxRetries is ' .. max_retries
    .. ' and this instance is at depth ' .. depth)
  rec.meta.exceptionContext = '{"replay_metadata":' .. raw_object(metadata) .. '}'
  rec.meta.logLevel = ARGV[13]
  save_instance(name, rec, 'running')
  emit_event('instanceFailed:' .. name .. ':' .. NOW)
  return finish(outcome, {instance = name, retried = false})
end

for key, raw in pairs(metadata) do rec.meta[key] = raw end
rec.meta.logLevel = ARGV[13]
set_status(rec, 'failed')
set_status(rec, 'replayed')
local clone_name, clone = clone_of(name, rec, replacement_kwargs(ARGV[8], rec))
save_instance(name, rec, 'running')
local due = NOW + math.floor(cooldown * 1000)
schedule(clone_name, clone, nil, due)
return finish(outcome, {instance = name, retried = true, clone = clone_name, due = due})
