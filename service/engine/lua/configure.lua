--[=[
configure: merge (PATCH) or replace (PUT) the session's task configuration (B1, B9).

Keys: all session keys (see includes/lib.lua); writes meta, tasks, defs, trig.
ARGV[5] mode: "merge" (tasks named replace those of the same name, others stay) or "replace"
        (the configuration becomes exactly the tasks given)
ARGV[6] cjson array of [name, raw config JSON, defs JSON {after, unless, every?, maxRetries}]
ARGV[7] raw JSON list of webhook subscriptions, or "" to keep the current ones (merge only)
Returns: cjson {tasks = [[name, raw config], ...] in configuration order, webhooks = raw|nil}.
Errors: INVALID when the result would hold a ring of andEvery cascades (M12): each completion
of one task would create a new instance of the next, forever. Checked before any write.
Creates no instance and applies no earlier fire (D13); instances keep following their task's
current definition (B11).
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local mode = ARGV[5]
local given = cjson.decode(ARGV[6])
local webhooks = ARGV[7]

-- andEvery links of the configuration as it will be: task -> the trigger that repeats it.
local every = {}
if mode == 'merge' then
  local current = redis.call('HGETALL', K.defs)
  for i = 1, #current, 2 do
    every[current[i]] = cjson.decode(current[i + 1]).every
  end
end
for _, entry in ipairs(given) do
  every[entry[1]] = cjson.decode(entry[3]).every
end
for _, entry in ipairs(given) do
  local seen, task = {}, entry[1]
  while type(task) == 'string' and every[task] ~= nil and not seen[task] do
    seen[task] = true
    task = every[task]
    if task == entry[1] then
      return fail_with('INVALID', 'tasks.' .. entry[1] .. '.andEvery: ring of andEvery cascades '
        .. '(each run would create the next one forever)')
    end
  end
end

touch()
local cfgv = redis.call('HINCRBY', K.meta, 'cfgv', 1)

local function triggers_of(def)
  local all = {}
  for _, t in ipairs(def.after) do all[t] = true end
  for _, t in ipairs(def.unless) do all[t] = true end
  return all
end

local function unindex(task, def)
  for trigger in pairs(triggers_of(def)) do
    local raw = redis.call('HGET', K.trig, trigger)
    if raw then
      local kept = {}
      for _, name in ipairs(cjson.decode(raw)) do
        if name ~= task then kept[#kept + 1] = name end
      end
      if #kept == 0 then
        redis.call('HDEL', K.trig, trigger)
      else
        redis.call('HSET', K.trig, trigger, cjson.encode(kept))
      end
    end
  end
end

local function index(task, def)
  for trigger in pairs(triggers_of(def)) do
    local raw = redis.call('HGET', K.trig, trigger)
    local names = raw and cjson.decode(raw) or {}
    if not contains(names, task) then names[#names + 1] = task end
    redis.call('HSET', K.trig, trigger, cjson.encode(names))
  end
end

local keep = {}
for _, entry in ipairs(given) do keep[entry[1]] = true end
if mode == 'replace' then
  local current = redis.call('HGETALL', K.defs)
  for i = 1, #current, 2 do
    if not keep[current[i]] then
      unindex(current[i], cjson.decode(current[i + 1]))
      redis.call('HDEL', K.defs, current[i])
      redis.call('HDEL', K.tasks, current[i])
    end
  end
end

for _, entry in ipairs(given) do
  local name, raw_config, def = entry[1], entry[2], cjson.decode(entry[3])
  local old = load_def(name)
  if old then
    unindex(name, old)
    def.pos = old.pos
  else
    def.pos = redis.call('HINCRBY', K.meta, 'npos', 1)
  end
  def.v = cfgv
  redis.call('HSET', K.defs, name, cjson.encode(def))
  redis.call('HSET', K.tasks, name, raw_config)
  index(name, def)
end

if webhooks ~= '' then
  redis.call('HSET', K.meta, 'webhooks', webhooks)
elseif mode == 'replace' then
  redis.call('HDEL', K.meta, 'webhooks')
end
log_event('configured', {mode = mode})
apply_ttl()

return answer(config_reply())
