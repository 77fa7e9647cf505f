--[=[
readSession: the head of a session's state in one consistent read, bounded in size.

Keys: all session keys; reads meta, tasks, defs, latest, inst.
ARGV[5] page: the latest kwargs and the instances are returned only when their hash holds at
        most this many entries; otherwise false, and Python reads them page by page (HSCAN,
        HMGET), so this script never copies a big hash (item 12 of issue 14).
Returns {meta (flat hash), tasks (flat name -> configuration text (config_text), in
configuration order), latest (flat hash) or false, number of instances, instances (flat hash
name -> record) or false}. tasks is bounded by TRIGGERS_MAX_TASKS.
NOT_FOUND for an unknown session.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end
local page = tonumber(ARGV[5]) or 1000
local count = redis.call('HLEN', K.inst)
local latest, instances = false, false
if redis.call('HLEN', K.latest) <= page then latest = redis.call('HGETALL', K.latest) end
if count <= page then instances = redis.call('HGETALL', K.inst) end
local tasks = {}
for _, item in ipairs(tasks_in_order()) do
  tasks[#tasks + 1] = item.name
  tasks[#tasks + 1] = config_text(item.def, rest_of(item.name))
end
return {redis.call('HGETALL', K.meta), tasks, latest, count, instances}
