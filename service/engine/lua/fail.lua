--[=[
fail: running -> failed with the cause (F3). No cascade: the failure blocks its downstream
tasks until the instance is replayed or skipped.

Keys: all ten session keys; writes inst, idx, leases, meta.
ARGV[3] instance name, ARGV[4] lease token
ARGV[5] exceptionType, ARGV[6] exceptionInfo (plain strings)
ARGV[7] exceptionContext: raw JSON object text, ARGV[8] log level
]=]
local name, token = ARGV[3], ARGV[4]
local rec, err = instance_or_error(name)
if err then return err end
local stale = check_lease(name, rec, token)
if stale then return stale end

local outcome = new_outcome()
touch()
set_status(rec, 'failed')
rec.meta.exceptionType = cjson.encode(ARGV[5])
rec.meta.exceptionInfo = cjson.encode(ARGV[6])
rec.meta.exceptionContext = ARGV[7]
rec.meta.logLevel = ARGV[8]
save_instance(name, rec, 'running')
return finish(outcome, {instance = name})
