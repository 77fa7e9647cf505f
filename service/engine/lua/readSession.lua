--[=[
readSession: the whole session in one consistent read (for GET /sessions/{uid}).

Keys: all session keys; reads meta, tasks, defs, inst, latest.
Returns {meta (flat hash), tasks [name, raw config, ...] in configuration order,
instances (flat hash name -> record), latest (flat hash trigger -> raw kwargs)}.
NOT_FOUND for an unknown session.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end
local tasks = {}
for _, item in ipairs(tasks_in_order()) do
  tasks[#tasks + 1] = item.name
  tasks[#tasks + 1] = redis.call('HGET', K.tasks, item.name)
end
return {
  redis.call('HGETALL', K.meta), tasks, redis.call('HGETALL', K.inst),
  redis.call('HGETALL', K.latest),
}
