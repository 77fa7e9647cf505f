--[=[
skip: an operator gives up on a failed instance (H2), optionally firing its cascade.

Keys: all session keys; writes inst, idx, meta, and what a fire writes.
ARGV[5] instance name, ARGV[6] "1" to cascade, ARGV[7] result (raw JSON object text, "{}" if
none): stored as metadata.result even without cascade, and the cascade's kwargs.
The failure metadata stays. The status check is atomic with the change, so two concurrent skips
(or a skip racing a replay) cannot both pass (M4). CONFLICT unless failed.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name, cascade, result = ARGV[5], ARGV[6] == '1', ARGV[7]
local rec, err = instance_or_error(name)
if err then return err end
if rec.status ~= 'failed' then
  return fail_with('CONFLICT', 'instance ' .. name .. ' is ' .. rec.status
    .. '; only a failed instance can be skipped')
end

local outcome = new_outcome()
touch()
log_event('operator', {action = cascade and 'skip+cascade' or 'skip', instance = name})
set_status(rec, 'skipped')
rec.meta.cascade = cascade and 'true' or 'false'
rec.meta.result = result
save_instance(name, rec, 'failed')
if cascade then fire(rec.task, result, outcome) end
return finish(outcome, {instance = name, cascaded = cascade})
