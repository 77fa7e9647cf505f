--[=[
readSession: the head of a session's state in one consistent read, bounded in size.

Keys: all session keys; reads meta (with the latest kwargs, its "#" fields), tasks, defs,
latest (the earlier layout's latest kwargs: adopt_latest_layout), inst.
ARGV[5] page: the latest kwargs and the instances are returned only when their hash holds at
        most this many entries; otherwise false, and Python reads them page by page (HSCAN,
        HMGET), so this script never copies a big hash (item 12 of issue 14).
Returns {meta (flat hash: with its "#<trigger>" fields, the latest kwargs, when they fit in a
page; else only the fields of META_FIELDS), tasks (flat name -> configuration text
(config_text), in configuration order), latest (the earlier layout's hash, flat; empty in the
current one) or false (the latest kwargs did not fit: read them in pages, from both), number of
instances, instances (flat hash name -> record) or false}. tasks is bounded by
TRIGGERS_MAX_TASKS. Nothing is converted here (a read changes nothing).
NOT_FOUND for an unknown session.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end
local page = tonumber(ARGV[5]) or 1000
local META_FIELDS = { -- both layouts' names (lib.lua touch)
  'v', 'c', 'u', 'g', 'n', 's', 'finalized', 'finalizedAt', 'webhooks',
  'version', 'created', 'updated', 'cfgv', 'npos', 'sid',
}
local count = redis.call('HLEN', K.inst)
local meta, latest, instances = nil, false, false
local OWN_FIELDS = 9 -- a meta holds at most this many of them (one layout's)
if redis.call('HLEN', K.meta) + redis.call('HLEN', K.latest) <= page + OWN_FIELDS then
  meta, latest = redis.call('HGETALL', K.meta), redis.call('HGETALL', K.latest)
else
  local values = redis.call('HMGET', K.meta, unpack(META_FIELDS))
  meta = {}
  for i, field in ipairs(META_FIELDS) do
    if values[i] then
      meta[#meta + 1] = field
      meta[#meta + 1] = values[i]
    end
  end
end
if count <= page then instances = redis.call('HGETALL', K.inst) end
local tasks = {}
for _, item in ipairs(tasks_in_order()) do
  tasks[#tasks + 1] = item.name
  tasks[#tasks + 1] = config_text(item.def, rest_of(item.name))
end
return {meta, tasks, latest, count, instances}
