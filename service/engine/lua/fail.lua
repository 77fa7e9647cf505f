--[=[
fail: running -> failed with the cause (F3). No cascade: the failure blocks its downstream
tasks until the instance is replayed or skipped.

Keys: all session keys; writes inst, idx, leases, meta.
ARGV[5] instance name, ARGV[6] lease token
ARGV[7] exceptionType, ARGV[8] exceptionInfo (plain strings)
ARGV[9] exceptionContext: raw JSON object text, ARGV[10] log level
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name, token = ARGV[5], ARGV[6]
local rec, err = instance_or_error(name)
if err then return err end
local stale = check_lease(name, rec, token)
if stale then return stale end

local outcome = new_outcome()
touch()
set_status(rec, 'failed')
rec.meta.exceptionType = cjson.encode(ARGV[7])
rec.meta.exceptionInfo = cjson.encode(ARGV[8])
rec.meta.exceptionContext = ARGV[9]
rec.meta.logLevel = ARGV[10]
save_instance(name, rec, 'running')
emit_event('instanceFailed:' .. name .. ':' .. NOW)
return finish(outcome, {instance = name})
