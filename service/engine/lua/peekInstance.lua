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
local task = decode_record(name, raw).task
local def = load_def(task)
return {raw, def and config_text(def, redis.call('HGET', K.tasks, task)) or false,
  def and tostring(def.v) or false}
