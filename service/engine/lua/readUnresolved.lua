--[=[
readUnresolved: unresolved tasks (K2) and unresolved instances (K1), each with waitingFor.

Keys: all session keys; reads meta, tasks, defs, inst, idx, counts, latest.
waitingFor of an unstarted instance: the triggers of its task's effective after it still lacks.
waitingFor of a task: the union over its unstarted instances; for a task with no instance, the
triggers of its after that never fired, or its whole after if all did (configuring applies no
earlier fire, D13: one of them must fire again to create the instance).
Returns cjson {tasks = [[name, raw config, waitingFor]], instances = [[name, record, waitingFor]]}
in configuration order. NOT_FOUND for an unknown session.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end

local function missing(rec, def)
  local out = {}
  if rec.status ~= 'unstarted' or not def then return out end
  for _, t in ipairs(def.after) do
    if rec.kwargs[t] == nil then out[#out + 1] = t end
  end
  return out
end

local instances = {}
local by_task = {}
for _, status in ipairs(UNRESOLVED) do
  local prefix = '[' .. status .. ':'
  for _, member in ipairs(redis.call('ZRANGEBYLEX', K.idx, prefix, prefix .. '\255')) do
    local name = string.sub(member, #status + 2)
    local raw = redis.call('HGET', K.inst, name)
    local rec = cjson.decode(raw)
    local def = load_def(rec.task)
    local waiting = missing(rec, def)
    instances[#instances + 1] = {name, raw, waiting}
    local seen = by_task[rec.task] or {}
    by_task[rec.task] = seen
    for _, t in ipairs(waiting) do seen[t] = true end
  end
end

local tasks = {}
for _, item in ipairs(tasks_in_order()) do
  local waiting = {}
  if redis.call('HEXISTS', K.counts, item.name) == 0 then
    for _, t in ipairs(item.def.after) do
      if redis.call('HEXISTS', K.latest, t) == 0 then waiting[#waiting + 1] = t end
    end
    if #waiting == 0 then waiting = item.def.after end
    tasks[#tasks + 1] = {item.name, redis.call('HGET', K.tasks, item.name), waiting}
  elseif by_task[item.name] then
    for _, t in ipairs(item.def.after) do
      if by_task[item.name][t] then waiting[#waiting + 1] = t end
    end
    tasks[#tasks + 1] = {item.name, redis.call('HGET', K.tasks, item.name), waiting}
  end
end
return cjson.encode({tasks = tasks, instances = instances})
