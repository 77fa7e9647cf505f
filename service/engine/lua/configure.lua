--[=[
configure: merge (PATCH) or replace (PUT) the session's task configuration (B1, B9).

Keys: all session keys (see includes/lib.lua); writes meta, tasks, defs (the defs, short
remainders and, past SCAN_TASKS tasks, the trigger index; counts and trig only when it moves
a session of the earlier layout, adopt_config_layout). The configuration is stored once: the
def (what the scripts need, encode_def) in `defs`, the remainder of each task's configuration
beside it when short, in `tasks` when long (rest_of); answers rebuild it (config_text).
ARGV[5] mode: "merge" (tasks named replace those of the same name, others stay) or "replace"
        (the configuration becomes exactly the tasks given)
ARGV[6] cjson array of [name, def {after, unless, every?, maxRetries, using}], one per task
ARGV[7] raw JSON list of webhook subscriptions, or "" to keep the current ones (merge only)
ARGV[8] most tasks the resulting configuration may hold (TRIGGERS_MAX_TASKS; "0": no limit)
ARGV[9] most tasks one trigger may concern (TRIGGERS_MAX_TASKS_PER_TRIGGER; "0": no limit)
ARGV[10..] the remainder of each task's configuration of ARGV[6], in the same order: raw JSON
        of the fields the def does not hold (records.py config_rest), kept apart so that it is
        neither unescaped nor escaped again: it is stored and answered as it is
Returns: JSON {"tasks": [[name, config object], ...] in configuration order, "webhooks": raw
JSON text as a string, absent when none}; the configs are spliced in as they are stored.
Errors, all before any write: INVALID when the result would hold a ring of andEvery cascades
(M12): each completion of one task would create a new instance of the next, forever. LIMIT when
the result would pass ARGV[8] or ARGV[9] (Python checks the request alone before; merging with
the stored tasks can only be checked here).
Creates no instance and applies no earlier fire (D13); instances keep following their task's
current definition (B11).

Cost: linear in the stored and given configuration. Each given def is decoded once, a stored
one only when a given task replaces it or it has an andEvery link; the ring check
walks each andEvery link once (memoised); the trigger index is changed in one pass:
replace rebuilds it from the given tasks alone; merge groups the additions and removals of
every given task per trigger, and reads and writes each trigger touched once (a merge that
takes a configuration past SCAN_TASKS tasks builds it whole, once; one of at most SCAN_TASKS
keeps none).
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local mode = ARGV[5]
local given = cjson.decode(ARGV[6])
local webhooks = ARGV[7]
local max_tasks = tonumber(ARGV[8]) or 0
local max_per_trigger = tonumber(ARGV[9]) or 0

-- The stored definitions, as raw cjson text: most are never decoded. Their position and
-- andEvery link are found by plain matches: a quote inside a cjson string is always escaped,
-- so '"pos":' and '"every":' can only be keys of the def itself.
local current, indexed, marked = {}, {}, false
adopt_config_layout()
local stored = redis.call('HGETALL', K.defs)
for i = 1, #stored, 2 do
  if is_def_field(stored[i]) then
    current[stored[i]] = stored[i + 1]
  elseif string.sub(stored[i], 1, 2) == '##' then
    indexed[#indexed + 1] = stored[i] -- the trigger index, dropped whole when rebuilt
    if stored[i] == INDEX_MARK then marked = true end -- kept (lib.lua SCAN_TASKS)
  end
end

local function pos_of(raw)
  return tonumber(string.match(raw, '"p":(%d+)') or string.match(raw, '"pos":(%d+)')) or 1
end

local function every_of(raw)
  if not string.find(raw, '"e":', 1, true) and not string.find(raw, '"every":', 1, true) then
    return nil
  end
  return decode_def(raw).every
end

local new_defs, is_given = {}, {}
for i, entry in ipairs(given) do
  new_defs[i] = entry[2]
  is_given[entry[1]] = true
end

-- Tasks of the configuration as it will be (LIMIT).
local total = #given
if mode == 'merge' then
  for name in pairs(current) do
    if not is_given[name] then total = total + 1 end
  end
end
if max_tasks > 0 and total > max_tasks then
  return fail_with('LIMIT', 'tasks: the configuration would hold ' .. total
    .. ' tasks, more than TRIGGERS_MAX_TASKS (' .. max_tasks .. ')')
end

-- andEvery links of the configuration as it will be: task -> the trigger that repeats it.
local every = {}
if mode == 'merge' then
  for name, raw in pairs(current) do every[name] = every_of(raw) end
end
for i, entry in ipairs(given) do every[entry[1]] = new_defs[i].every end

-- A task on a ring of andEvery links, or nil. Each task has at most one link, so a walk from a
-- task either ends, joins a walk already done (memoised: state 2) or meets itself (state 1).
-- The stored configuration has no ring, so a new ring passes through a given task.
local function task_on_ring()
  local state = {}
  for _, entry in ipairs(given) do
    local path, node = {}, entry[1]
    while type(node) == 'string' and every[node] ~= nil and state[node] == nil do
      state[node] = 1
      path[#path + 1] = node
      node = every[node]
    end
    if state[node] == 1 then
      local member = node
      repeat
        if is_given[member] then return member end
        member = every[member]
      until member == node
      return node
    end
    for _, visited in ipairs(path) do state[visited] = 2 end
  end
  return nil
end

local ring = task_on_ring()
if ring then
  return fail_with('INVALID', 'tasks.' .. ring .. '.andEvery: ring of andEvery cascades '
    .. '(each run would create the next one forever)')
end

local function triggers_of(def)
  local all = {}
  for _, t in ipairs(def.after) do all[t] = true end
  for _, t in ipairs(def.unless) do all[t] = true end
  return all
end

-- Adds task `name` to the lists of `index` (trigger -> tasks) of the triggers `def` uses.
local function index_task(index, name, def)
  for trigger in pairs(triggers_of(def)) do
    index[trigger] = index[trigger] or {}
    index[trigger][#index[trigger] + 1] = name
  end
end

-- The stored tasks that use `trigger`: the index when the session keeps one (marked), else
-- the stored defs read above, grouped once (tasks_of_trigger would read and scan defs again
-- for every trigger touched).
local grouped = nil
local function stored_tasks_of(trigger)
  if marked then return tasks_of_trigger(trigger) end
  if not grouped then
    grouped = {}
    for name, raw in pairs(current) do index_task(grouped, name, decode_def(raw)) end
  end
  return grouped[trigger]
end

-- The new list of every trigger whose list changes: lists[trigger] = {task, ...} (empty: drop
-- it). Replace: the whole index is rebuilt from the given tasks (no stored list is read).
-- Merge: the additions and removals of every given task are grouped per trigger, and each
-- trigger touched is read once. `added[trigger]`: a task this request adds to it (for errors).
local lists, added = {}, {}
local removed = {}
if mode == 'replace' then
  for name in pairs(current) do
    if not is_given[name] then removed[#removed + 1] = name end
  end
  for i, entry in ipairs(given) do
    for trigger in pairs(triggers_of(new_defs[i])) do
      if not lists[trigger] then
        lists[trigger] = {}
        added[trigger] = entry[1]
      end
      local list = lists[trigger]
      list[#list + 1] = entry[1]
    end
  end
else
  local drop, add = {}, {}
  for i, entry in ipairs(given) do
    local name = entry[1]
    local old = current[name]
    local before = old and triggers_of(decode_def(old)) or {}
    local after = triggers_of(new_defs[i])
    for trigger in pairs(before) do
      if not after[trigger] then
        drop[trigger] = drop[trigger] or {}
        drop[trigger][name] = true
      end
    end
    for trigger in pairs(after) do
      if not before[trigger] then
        add[trigger] = add[trigger] or {}
        add[trigger][#add[trigger] + 1] = name
      end
    end
  end
  local touched = {}
  for trigger in pairs(drop) do touched[trigger] = true end
  for trigger in pairs(add) do touched[trigger] = true end
  for trigger in pairs(touched) do
    local gone = drop[trigger] or {}
    local list, present = {}, {}
    for _, name in ipairs(stored_tasks_of(trigger) or {}) do
      if not gone[name] and not present[name] then
        list[#list + 1] = name
        present[name] = true
      end
    end
    for _, name in ipairs(add[trigger] or {}) do
      if not present[name] then
        list[#list + 1] = name
        present[name] = true
      end
    end
    lists[trigger] = list
    if add[trigger] then added[trigger] = add[trigger][1] end
  end
end

-- Tasks per trigger (LIMIT), for the triggers this request adds tasks to.
if max_per_trigger > 0 then
  for trigger, task in pairs(added) do
    local count = #lists[trigger]
    if count > max_per_trigger then
      local field = 'unless'
      for i, entry in ipairs(given) do
        if entry[1] == task and contains(new_defs[i].after, trigger) then field = 'after' end
      end
      return fail_with('LIMIT', 'tasks.' .. task .. '.' .. field .. ': trigger ' .. trigger
        .. ' would concern ' .. count .. ' tasks, more than TRIGGERS_MAX_TASKS_PER_TRIGGER ('
        .. max_per_trigger .. ')')
    end
  end
end

-- Writes.
touch()
local cfgv = redis.call('HINCRBY', K.meta, 'g', 1)
local npos = tonumber(redis.call('HGET', K.meta, 'n')) or 0
local first_npos = npos

-- One command per CHUNK arguments rather than one per field (unpack stays bounded).
local function in_chunks(command, key, args)
  for first = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, first, math.min(first + CHUNK - 1, #args)))
  end
end

local removed_rests = {}
for i, name in ipairs(removed) do removed_rests[i] = '#@' .. name end
in_chunks('HDEL', K.defs, removed)
in_chunks('HDEL', K.defs, removed_rests)
in_chunks('HDEL', K.tasks, removed)

-- Each given task's rest goes to defs when short, else to tasks; its other place is cleared.
local def_fields, task_fields, short_rests, long_rests = {}, {}, {}, {}
for i, entry in ipairs(given) do
  local name, def, old = entry[1], new_defs[i], current[entry[1]]
  if old then
    def.pos = pos_of(old)
  else
    npos = npos + 1
    def.pos = npos
  end
  def.v = cfgv
  def_fields[#def_fields + 1] = name
  def_fields[#def_fields + 1] = encode_def(def)
  local rest = ARGV[9 + i]
  if #rest <= SHORT_REST then
    def_fields[#def_fields + 1] = '#@' .. name
    def_fields[#def_fields + 1] = rest
    short_rests[#short_rests + 1] = name
  else
    task_fields[#task_fields + 1] = name
    task_fields[#task_fields + 1] = rest
    long_rests[#long_rests + 1] = '#@' .. name
  end
end
in_chunks('HSET', K.defs, def_fields)
in_chunks('HSET', K.tasks, task_fields)
in_chunks('HDEL', K.tasks, short_rests)
in_chunks('HDEL', K.defs, long_rests)
if npos ~= first_npos then redis.call('HSET', K.meta, 'n', npos) end

-- The trigger index of the configuration as it will be, built whole (lists of a merge hold
-- only the triggers it touches).
local function whole_index()
  local all = {}
  for name, raw in pairs(current) do
    if not is_given[name] then index_task(all, name, decode_def(raw)) end
  end
  for i, entry in ipairs(given) do index_task(all, entry[1], new_defs[i]) end
  return all
end

-- The trigger index (lib.lua SCAN_TASKS): none for a small configuration (scanned instead);
-- built whole when a configuration grows past SCAN_TASKS, or keeps an earlier layout's index
-- that was never marked; else changed trigger by trigger.
local trig_fields, emptied = {}, {}
if total <= SCAN_TASKS then
  in_chunks('HDEL', K.defs, indexed)
  lists = {}
elseif mode == 'replace' or not marked then
  if mode == 'merge' then lists = whole_index() end
  in_chunks('HDEL', K.defs, indexed)
  trig_fields = {INDEX_MARK, '1'}
end
for trigger, list in pairs(lists) do
  if #list == 0 then
    emptied[#emptied + 1] = '##' .. trigger
  else
    trig_fields[#trig_fields + 1] = '##' .. trigger
    trig_fields[#trig_fields + 1] = cjson.encode(list)
  end
end
in_chunks('HDEL', K.defs, emptied)
in_chunks('HSET', K.defs, trig_fields)

if webhooks ~= '' then
  redis.call('HSET', K.meta, 'webhooks', webhooks)
elseif mode == 'replace' then
  redis.call('HDEL', K.meta, 'webhooks')
end
log_shaped({'C', mode})
apply_ttl()

-- The answer, built from what this script holds (no second decode of every def).
local order = {}
for i, entry in ipairs(given) do
  order[#order + 1] = {name = entry[1], pos = new_defs[i].pos,
    raw = config_text(new_defs[i], ARGV[9 + i])}
end
if mode == 'merge' then
  local others = {}
  for name, raw in pairs(current) do
    if not is_given[name] then others[#others + 1] = {name = name, def = decode_def(raw)} end
  end
  if #others > 0 then
    local names = {}
    for i, item in ipairs(others) do names[i] = item.name end
    local raws = rests_of(names)
    for i, item in ipairs(others) do
      local raw = config_text(item.def, raws[i])
      order[#order + 1] = {name = item.name, pos = item.def.pos, raw = raw}
    end
  end
end
table.sort(order, function(a, b) return a.pos < b.pos end)
local parts = {}
for i, item in ipairs(order) do
  parts[i] = '[' .. cjson.encode(item.name) .. ',' .. item.raw .. ']'
end
local stored_hooks = redis.call('HGET', K.meta, 'webhooks')
local hooks = stored_hooks and (',"webhooks":' .. cjson.encode(stored_hooks)) or ''
return answer('{"tasks":[' .. table.concat(parts, ',') .. ']' .. hooks .. '}')
