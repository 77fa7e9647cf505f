--[=[
complete: running -> finished with its result, and the cascade fire, in one atomic step (F2, F4).

Keys: all session keys; writes inst, idx, leases, and what a fire writes.
ARGV[5] instance name, ARGV[6] lease token
ARGV[7] result: raw JSON object text (the worker turned falsy results into {}, F2)
ARGV[8] log level (I5)
Returns: the outcome with the cascade fire (trigger = the task's name, kwargs = the result).
A crash can no longer leave a finished task without its cascade (M6), and an error in the
cascade cannot turn the finished instance into failed (F5): both are one script.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name, token, result, level = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local rec, err = instance_or_error(name)
if err then return err end
local stale = check_lease(name, rec, token)
if stale then return stale end

local outcome = new_outcome()
touch()
set_status(rec, 'finished')
rec.meta.result = result
rec.meta.logLevel = level
save_instance(name, rec, 'running')
fire(rec.task, result, outcome)
return finish(outcome, {instance = name})
