--[=[
peekInstance: what a worker needs to prepare a claim: the instance record, its task's raw
configuration (withParams, run, using, custom directives) and the config version (defs.v) the
claim will check. Keys: all session keys; reads inst, tasks, defs.
ARGV[5] instance name. Returns {record, raw config or false, version or false}.
NOT_FOUND for an unknown instance.
]=]
local name = ARGV[5]
local raw = redis.call('HGET', K.inst, name)
if not raw then return fail_with('NOT_FOUND', 'instance ' .. name .. ' does not exist') end
local rec = cjson.decode(raw)
local def = load_def(rec.task)
return {raw, redis.call('HGET', K.tasks, rec.task), def and tostring(def.v) or false}
