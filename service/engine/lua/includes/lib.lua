--[=[
Shared library, prepended to every script by service/engine/scripts.py (Redis has no includes).

Every script receives the same thirteen keys of ONE session, all under the hash tag {<uid>}, in this
order (service/engine/keys.py builds them; no key name is ever built here, so every script runs
unchanged on Redis Cluster):

  KEYS[1]  meta    hash  c created, u updated (ms, base 36), v version, g config version, n
                         next task position, s the sessionId of this incarnation (see
                         new_session_id); the earlier layout's names were created, updated
                         (decimal), version, cfgv, npos, sid (touch renames them);
                         finalized ("1"), finalizedAt (ms), webhooks (raw JSON);
                         "#<trigger>" -> kwargs of the trigger's most recent fire (raw JSON
                         text; D9): one key less for a small session (each key costs ~90
                         bytes). Trigger names have no "#" and no other field starts with it;
                         only latest_field and readSession know them
  KEYS[2]  tasks   hash  task name -> the rest of its configuration (raw JSON text: run,
                         withParams, custom directives; what defs does not hold) when it is
                         longer than SHORT_REST bytes; a shorter one is in defs (rest_of).
                         The earlier layout kept the whole configuration here: config_text
                         reads both
  KEYS[3]  defs    hash  the session's small per-task and per-trigger values, one hash (each
                         key costs ~90 bytes in Redis; issue 11 item 4), told apart by field:
                         task name -> what the scripts need of it (cjson, encode_def): after
                         (effective, with the andEvery trigger), unless, every, maxRetries,
                         using, pos, v; the configuration is stored once, across defs and
                         tasks. "#<task>" -> instances created so far (the next instance
                         number). "##<trigger>" -> cjson list of the tasks that use it
                         (after/andEvery/unless), and "##" -> "1", only for a
                         configuration of more than SCAN_TASKS tasks (smaller ones are
                         scanned). "#@<task>" -> the rest of the task's configuration when
                         it is short (see KEYS[2]). Task names have no
                         "#" and never start with "@", so these never meet; only count_of,
                         next_number, tasks_of_trigger, rest_of and is_def_field know them
  KEYS[4]  trig    hash  earlier layout only: the "##" fields of defs (adopt_config_layout)
  KEYS[5]  inst    hash  instance name "<task>#<n>" -> instance record (encode_record, below)
  KEYS[6]  idx     zset  score 0, members "<status>:<instance>"; lexicographic ranges give the
                         instances of one status, or of one status and one task, without scanning.
                         Kept only past INDEX_FROM instances (see keeps_index): a session
                         with fewer has none, and its statuses are read from the records
  KEYS[7]  latest  hash  earlier layout only: the "#" fields of meta (latest_field)
  KEYS[8]  counts  hash  earlier layout only: the "#" fields of defs (adopt_config_layout)
  KEYS[9]  outbox  zset  instance -> due time (ms): scheduled, until a worker claims it; and
                         events for webhooks ("@<event>") until their deliveries are queued
  KEYS[10] leases  zset  instance -> lease expiry (ms) of running instances
  KEYS[11] idem    string  this request's Idempotency-Key record (a placeholder, never written,
                         when the request has no key): {fp, answer}
  KEYS[12] deliveries    hash  webhook delivery id -> delivery record (cjson: url, type, body,
                         created, state, attempts, chain, take; service/webhooks/store.py)
  KEYS[13] delivery_due  zset  webhook delivery id -> when its next attempt is due (ms), or when
                         the attempt in progress is overdue; absent once delivered or failed
  KEYS[14] events  list  the session's event log, oldest first: one entry per change that
                         recorded events, "<id><RS><events>" (log_line), capped at the newest
                         LOG_CAP entries. The earlier layout's log was a stream: it becomes a
                         list at the session's next logged change (adopt_stream_log)

Common ARGV: ARGV[1] session TTL in seconds ("0": keep), ARGV[2] "1" to run the finalization
check after the change (the `finalizing` manager), ARGV[3] the request fingerprint for the
Idempotency-Key ("" when none), ARGV[4] how long the record is kept (ms). Script arguments start
at ARGV[5]. Every script also gets four trailing ARGV: the runners settled at commit (see
schedule), the event log's cap (entries, "0": no log), the webhook event kinds with a global
subscriber (TRIGGERS_WEBHOOKS; comma-separated, "*" for every kind; see emit_event) and the
acting API key's name ("" for none); a script's own arguments run from ARGV[5] to ARGV[NARGV].

Idempotency: a changing script first calls replayed_answer(); when the record holds an answer
for the same fingerprint it returns that answer and changes nothing, so repeated requests have
one effect even when they race. Its answer is stored by answer() in the same atomic step as the
change it describes, so a crash can never separate the two.

Instance record (as load_instance gives it; stored compact by encode_record): {task, status,
kwargs = {trigger = raw JSON}, abandon = [trigger], meta = {key = raw JSON},
ts = {name = time in ms}, lease = {token, exp, attempt}?}.
Times are kept as epoch milliseconds (half the bytes of ISO text); Python formats them.
User payloads (kwargs, results, metadata values) stay raw JSON text: Lua's cjson would turn []
into {} and round numbers to 14 digits, so Lua never decodes them. Python decodes on read.

Errors are returned with redis.error_reply("<KIND> <message>") before any write, so a refused
change leaves nothing behind. KIND is NOT_FOUND, CONFLICT, INVALID or LIMIT (see errors.py).
]=]

pcall(redis.replicate_commands) -- Redis < 7 needs it before TIME followed by writes.

local K = {
  meta = KEYS[1], tasks = KEYS[2], defs = KEYS[3], trig = KEYS[4], inst = KEYS[5],
  idx = KEYS[6], latest = KEYS[7], counts = KEYS[8], outbox = KEYS[9], leases = KEYS[10],
  idem = KEYS[11], deliveries = KEYS[12], delivery_due = KEYS[13], events = KEYS[14],
}
local TTL = tonumber(ARGV[1]) or 0
local FINALIZE = ARGV[2] == '1'
local IDEM_FP = ARGV[3] or ''
local IDEM_TTL = tonumber(ARGV[4]) or 0
local NARGV = #ARGV - 4
local SETTLED = ',' .. (ARGV[#ARGV - 3] or '') .. ','
local LOG_CAP = tonumber(ARGV[#ARGV - 2]) or 0
local GLOBAL_EVENTS = ARGV[#ARGV - 1] or '*'
local ACTOR = ARGV[#ARGV] or ''
local FINAL_TRIGGER = 'sessionFinalized'
local UNRESOLVED = {'unstarted', 'scheduled', 'running', 'failed'}
local STATUSES = {
  unstarted = true, scheduled = true, running = true, finished = true,
  failed = true, replayed = true, skipped = true, abandoned = true,
}

local _t = redis.call('TIME')
local NOW = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)

local function fail_with(kind, message)
  return redis.error_reply(kind .. ' ' .. message)
end


-- HMGET of any number of fields: Lua's unpack() fails past about 8,000 values ("too many
-- results to unpack"), so fields go CHUNK at a time. Missing fields are false, as HMGET says.
local CHUNK = 1000
local function hmget_all(key, fields)
  local out = {}
  for first = 1, #fields, CHUNK do
    local last = math.min(first + CHUNK - 1, #fields)
    local values = redis.call('HMGET', key, unpack(fields, first, last))
    for i = 1, last - first + 1 do out[first + i - 1] = values[i] end
  end
  return out
end

local function contains(list, value)
  for _, item in ipairs(list) do
    if item == value then return true end
  end
  return false
end

-- JSON object text from a table of raw JSON values (keys encoded, values spliced as they are).
local function raw_object(map)
  local parts = {}
  for key, raw in pairs(map) do
    parts[#parts + 1] = cjson.encode(key) .. ':' .. raw
  end
  table.sort(parts)
  return '{' .. table.concat(parts, ',') .. '}'
end

-- A whole number >= 0 in base 36 (lower case), built in one string.char: the record's head is
-- written on every change of an instance, and a log entry's id on every logged change.
local function base36(n)
  local digits, i = {}, 14
  repeat
    local d = n % 36
    digits[i] = d < 10 and 48 + d or 87 + d -- "0".."9", "a".."z"
    n = (n - d) / 36
    i = i - 1
  until n < 1
  return string.char(unpack(digits, i + 1, 14))
end

---------------------------------------------------------------------------------------------
-- Session metadata
---------------------------------------------------------------------------------------------

local function session_exists()
  return redis.call('EXISTS', K.meta) == 1
end

-- The opaque sessionId of a session created now: the server's time in microseconds, in hex.
-- Every key of one UID lives on one server, whose scripts run one at a time and each take more
-- than a microsecond, so two incarnations of a UID (deleted or expired, then created again)
-- never get the same id unless the server's clock steps back to that very microsecond. TIME
-- is the only source of variety a script may use (math.random repeats its seed every call);
-- scripts are replicated by effects, so replicas store the id the primary chose.
local function new_session_id()
  return string.format('%x%05x', tonumber(_t[1]), tonumber(_t[2]))
end

-- Creates the session if needed and bumps its version: called once by every changing script.
-- meta's own fields have one-letter names (KEYS[1]) and its times are in base 36, ~26 bytes
-- less per session (issue 11 item 4). A session of the earlier layout (whole names, times in
-- decimal; before sessionIds, none) is renamed at its next change: its "v" is new then.
local function touch()
  if redis.call('HINCRBY', K.meta, 'v', 1) > 1 then
    redis.call('HSET', K.meta, 'u', base36(NOW))
    return
  end
  local old = redis.call('HMGET', K.meta, 'version', 'created', 'cfgv', 'npos', 'sid')
  if old[1] then
    redis.call('HDEL', K.meta, 'version', 'created', 'updated', 'cfgv', 'npos', 'sid')
  end
  redis.call('HSET', K.meta, 'v', (tonumber(old[1]) or 0) + 1,
    'c', base36(tonumber(old[2]) or NOW), 'u', base36(NOW), 'g', old[3] or 0, 'n', old[4] or 0,
    's', old[5] or new_session_id())
end

-- The latest kwargs of each trigger fired (D9) are meta fields "#<trigger>": latest_field
-- gives the field. A session of the earlier layout kept them in a hash of their own
-- (KEYS[7]): the first script that needs them moves them into meta, once (O(triggers)), a pure
-- change of representation (meta exists whenever they do, and its time to live is the
-- session's). Few top-level functions: each one is a closure built on every call of every
-- script that carries it.
local latest_checked = false
local function latest_field(trigger)
  if not latest_checked then
    latest_checked = true
    if redis.call('EXISTS', K.latest) == 1 then
      local flat = redis.call('HGETALL', K.latest)
      for i = 1, #flat, 2 do flat[i] = '#' .. flat[i] end
      for first = 1, #flat, 2 * CHUNK do
        redis.call('HSET', K.meta, unpack(flat, first, math.min(first + 2 * CHUNK - 1, #flat)))
      end
      redis.call('DEL', K.latest)
    end
  end
  return '#' .. trigger
end

-- The events of this change, written as ONE log entry by flush_events() (called by
-- apply_ttl, which every changing script runs): one RPUSH per change, so a fire costs one more
-- command inside its script, and the log is ordered exactly as the changes were.
local EVENTS = {}

-- Events are stored compact. The commonest are arrays, their fields by position (log_shaped):
-- ["F", trigger, kwargsBytes], ["N", instance] (created), ["C", mode] (configured), ["Z"]
-- (finalized) and [status code, instance, from code] (an instance's new status; from left out
-- for a new instance). The others (log_event) are objects, their field names as one-letter
-- codes (EVENT_KEY_CODE) and the values of `type` and `from` (event kinds and statuses) as
-- codes too (EVENT_VALUE_CODE); a name without a code is kept whole.
-- service/engine/events.py holds the same tables (EVENT_SHAPES; and reads events with whole
-- names too: those of the earlier layout's stream).
local EVENT_KEY_CODE = {
  type = 't', trigger = 'g', kwargsBytes = 'b', mode = 'm', instance = 'i', from = 'f',
  action = 'c', status = 's', delivery = 'd', event = 'v',
}
local EVENT_VALUE_CODE = {
  configured = 'C', fired = 'F', created = 'N', finalized = 'Z', operator = 'O',
  webhookDelivered = 'D', webhookFailed = 'X', webhookRetrying = 'Y', unstarted = 'u',
  scheduled = 's', claimed = 'c', running = 'r', finished = 'f', failed = 'x', replayed = 'p',
  skipped = 'k', abandoned = 'a',
}

local function log_shaped(event)
  if LOG_CAP > 0 then EVENTS[#EVENTS + 1] = event end
end

local function log_event(kind, fields)
  if LOG_CAP <= 0 then return end
  local event = {t = EVENT_VALUE_CODE[kind] or kind}
  for key, value in pairs(fields or {}) do
    local code = EVENT_KEY_CODE[key] or key
    if code == 'f' then value = EVENT_VALUE_CODE[value] or value end
    event[code] = value
  end
  EVENTS[#EVENTS + 1] = event
end

-- One log entry as stored (KEYS[14]): "<id><RS><payload>", the id "<ms>[-<n>]" in base 36
-- (n counts entries within one ms, left out when 0) and RS the ASCII record separator. The
-- payload is the change's events as text when each has a common shape and the change's time
-- is the id's and no API key made it (the usual case): the shaped events (log_shaped)
-- joined by RS, the fields of each by US, the unit separator ("F<US>applicant<US>10<RS>N<US>
-- t_report#0"); names hold no control character (checks.py NAME_RE), and a number is written
-- whole. Otherwise JSON: the cjson list of the events, or {"at":ms,"a":key,"e":<events>}.
-- About 15 bytes less per entry than JSON with a decimal id (issue 11 item 4). The earlier
-- layout's entries, "<decimal id> <JSON>" (no RS anywhere: JSON escapes control characters),
-- stay as they are; service/engine/events.py reads every form and gives every id as
-- "<ms>-<n>" in decimal. `events` is the change's events table, or their JSON text (an entry
-- adopted from a stream).
local RS, US = '\030', '\031'
local function log_line(ms, n, at, actor, events)
  local id = n > 0 and (base36(ms) .. '-' .. base36(n)) or base36(ms)
  local text = type(events) == 'table' and {}
  for i, event in ipairs(text and events or {}) do
    if event[1] == nil then text = nil break end
    text[i] = table.concat(event, US)
  end
  if actor == '' and at == ms and text then return id .. RS .. table.concat(text, RS) end
  local json = type(events) == 'table' and cjson.encode(events) or events
  if actor == '' and at == ms then return id .. RS .. json end
  local who = actor ~= '' and (',"a":' .. cjson.encode(actor)) or ''
  return id .. RS .. '{"at":' .. string.format('%.0f', at) .. who .. ',"e":' .. json .. '}'
end

-- The id of a stored entry as numbers (ms, n): either layout (see log_line).
local function entry_order(line)
  local ms, n = string.match(line, '^([0-9a-z]+)%-?([0-9a-z]*)' .. RS)
  if ms then return tonumber(ms, 36), tonumber(n, 36) or 0 end
  ms, n = string.match(line, '^(%d+)%-?(%d*)')
  return tonumber(ms), tonumber(n) or 0
end

-- A log of the earlier layout (a Redis Stream, fields at, e, a) becomes a list at its
-- session's next logged change: its newest LOG_CAP entries, ids kept (they are the clients'
-- cursors), in the same order. Once per session, O(LOG_CAP).
local function adopt_stream_log()
  local entries = redis.call('XREVRANGE', K.events, '+', '-', 'COUNT', LOG_CAP)
  redis.call('DEL', K.events)
  local lines = {}
  for i = #entries, 1, -1 do
    local ms, n = string.match(entries[i][1], '^(%d+)%-(%d+)$')
    local fields, f = entries[i][2], {}
    for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
    ms, n = tonumber(ms), tonumber(n)
    lines[#lines + 1] = log_line(ms, n, tonumber(f.at) or ms, f.a or '', f.e or '[]')
  end
  for first = 1, #lines, CHUNK do
    redis.call('RPUSH', K.events, unpack(lines, first, math.min(first + CHUNK - 1, #lines)))
  end
end

-- Appends this change's entry, with the change's time as its id, or the last entry's when the
-- clock stepped back, and n counting entries within one ms, so ids only grow (readers page
-- and resume by them). The list is trimmed to LOG_CAP exactly.
local function flush_events()
  if #EVENTS == 0 then return end
  local last = redis.pcall('LINDEX', K.events, -1)
  if type(last) == 'table' and last.err then -- WRONGTYPE: the earlier layout's stream
    adopt_stream_log()
    last = redis.call('LINDEX', K.events, -1)
  end
  local ms, n = NOW, 0
  if last then
    local last_ms, last_n = entry_order(last)
    if last_ms >= NOW then ms, n = last_ms, last_n + 1 end
  end
  if redis.call('RPUSH', K.events, log_line(ms, n, NOW, ACTOR, EVENTS)) > LOG_CAP then
    redis.call('LTRIM', K.events, -LOG_CAP, -1)
  end
  EVENTS = {}
end

-- A session with work outstanding is kept at least this long (s) after its last change or
-- sweep: longer than the sweeper ever leaves it unvisited (a pre-mark looks 60 s ahead; a
-- stranded entry is re-sent, and the session swept, every grace period).
local OUTSTANDING_HOLD = 120

-- The latest time (ms) at which the session still has work due (its last outbox entry, lease
-- expiry or webhook delivery attempt), and whether it has any work outstanding at all.
local settled_now = false -- set by schedule(): as if in the outbox until this script ends
local function latest_due()
  local latest, outstanding = NOW, settled_now
  for _, key in ipairs({K.outbox, K.leases, K.delivery_due}) do
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if last[2] then
      outstanding = true
      if tonumber(last[2]) > latest then latest = tonumber(last[2]) end
    end
  end
  return latest, outstanding
end

-- Applies the session TTL to every key of the session, delivery records included (no-op when
-- the TTL setting is off). While work is outstanding the TTL counts from the latest due time
-- plus a hold (`hold` s, default OUTSTANDING_HOLD): a session never expires under a task that
-- runs (renewLease applies it too), a retry that cools down, an instance waiting for a worker
-- or a webhook delivery still to be attempted; and everything of the session expires together.
local function apply_ttl(hold)
  flush_events()
  if TTL <= 0 then return end
  local latest, outstanding = latest_due()
  local ttl = TTL
  if outstanding then
    ttl = TTL + math.ceil((latest - NOW) / 1000) + (hold or OUTSTANDING_HOLD)
  end
  for i = 1, 10 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
  redis.call('EXPIRE', K.deliveries, ttl)
  redis.call('EXPIRE', K.delivery_due, ttl)
  redis.call('EXPIRE', K.events, ttl)
end

-- The stored answer of an earlier request with the same Idempotency-Key and fingerprint
-- (nil when there is none); an error reply when the key was used for another request.
local function replayed_answer()
  if IDEM_FP == '' then return nil end
  local raw = redis.call('GET', K.idem)
  if not raw then return nil end
  local record = cjson.decode(raw)
  if record.fp ~= IDEM_FP then
    return fail_with('IDEMPOTENCY', 'Idempotency-Key already used with another request')
  end
  return record.answer
end

-- Returns a changing script's encoded answer, storing it for its Idempotency-Key if any.
local function answer(encoded)
  if IDEM_FP ~= '' then
    redis.call('SET', K.idem, cjson.encode({fp = IDEM_FP, answer = encoded}), 'PX', IDEM_TTL)
  end
  return encoded
end

---------------------------------------------------------------------------------------------
-- Instances
---------------------------------------------------------------------------------------------

local function number_of(name)
  return tonumber(string.match(name, '#(%d+)$'))
end

-- Instance records are stored compact (issue 11 item 4), as text:
--   <head><kwargs>                                   when that is all the record holds, else
--   <head>[<kwargs>,<engine meta>(,<abandon>,<meta>,<lease>)]    (the last three when needed)
-- head: "<status code> <created ms, base 36>" then " <code><ms after created>" per time
-- (codes: TS_CODE; a status is stored as the code of its time). `unstarted` is left out when
-- it equals `created`, `lastModified` when it equals the current status's time; a code with
-- no number says the time is absent. The head never holds "{" or "[", so the first of them
-- starts the rest. kwargs: one JSON object, trigger -> the fire's kwargs spliced in as they
-- came (raw JSON, not escaped into a string: Lua never decodes them, raw_members splits the
-- object without reading its values), keys sorted. The rest is cjson: engine meta, user meta
-- (values raw JSON text), abandon, lease. `task` is left out (the name's part before "#").
-- The metadata the engine writes goes apart under one-letter codes (META_CODE), so it can
-- never meet a caller's key; actualKwargs is "=" when it is the instance's kwargs as one
-- object (keys sorted, values as stored: what a claim merges when the task has no
-- withParams). A small record (a scheduled instance with two small kwargs) stays within
-- Redis' hash-max-listpack-value (64 bytes), so a small session's `inst` keeps the compact
-- encoding. Two earlier layouts are read as they are: a record that starts with "[" (a cjson
-- array [head, kwargs, engine, abandon, meta, lease], created in decimal, kwargs escaped
-- into strings) and one that starts with "{" (the whole table as cjson); each is written in
-- the current layout at its next change. service/engine/records.py decodes all three alike.
local META_CODE = {
  actualKwargs = 'k', attempt = 'a', result = 'r', logLevel = 'l', exceptionType = 't',
  exceptionInfo = 'i', exceptionContext = 'x', cascade = 'c', depth = 'd', parent = 'p',
  cooldown = 'o',
}
local TS_CODE = {
  lastModified = 'm', unstarted = 'u', scheduled = 's', running = 'r', finished = 'f',
  failed = 'x', replayed = 'p', skipped = 'k', abandoned = 'a',
}
local function inverted(codes)
  local names = {}
  for name, code in pairs(codes) do names[code] = name end
  return names
end
local META_NAME = inverted(META_CODE)
local TS_NAME = inverted(TS_CODE)

local function task_of(name)
  return string.match(name, '^(.*)#%d+$')
end

-- The instance's kwargs as one JSON object, keys sorted: the actualKwargs of a claim that
-- merged no withParams (records.py builds the same text).
local function kwargs_text(kwargs)
  local keys = {}
  for key in pairs(kwargs) do keys[#keys + 1] = key end
  table.sort(keys)
  for i, key in ipairs(keys) do
    -- a name needs no escape unless it holds one of "\/ (names have no control characters,
    -- and cjson leaves other bytes as they are): one cjson call less per trigger
    local quoted = string.find(key, '["\\/]') and cjson.encode(key) or '"' .. key .. '"'
    keys[i] = quoted .. ':' .. kwargs[key]
  end
  return '{' .. table.concat(keys, ',') .. '}'
end

local NO_META = {}

-- The JSON object that starts at i as {key = its value's raw JSON text}, and where it ends:
-- the values are cut out, never decoded (cjson would round numbers and turn [] into {}).
local function raw_members(s, i)
  local function string_end(at) -- at: an opening quote; returns the closing one
    local j = at + 1
    while true do
      local found = string.find(s, '["\\]', j)
      if string.byte(s, found) == 34 then return found end
      j = found + 2 -- past the escaped character
    end
  end
  local function value_end(at) -- the last character of the JSON value that starts at `at`
    local c = string.byte(s, at)
    if c == 34 then return string_end(at) end
    if c ~= 123 and c ~= 91 then return (string.find(s, '[,}%]%s]', at) or #s + 1) - 1 end
    local depth, j = 0, at
    while true do
      j = string.find(s, '[%[%]{}"]', j)
      c = string.byte(s, j)
      if c == 34 then
        j = string_end(j)
      elseif c == 123 or c == 91 then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return j end
      end
      j = j + 1
    end
  end
  local map = {}
  local j = string.find(s, '%S', i + 1)
  if string.byte(s, j) == 125 then return map, j end -- "}": empty
  while true do
    local key_end = string_end(j)
    local key = string.sub(s, j + 1, key_end - 1)
    if string.find(key, '\\', 1, true) then key = cjson.decode(string.sub(s, j, key_end)) end
    local first = string.find(s, '[^%s:]', key_end + 1)
    local last = value_end(first)
    map[key] = string.sub(s, first, last)
    j = string.find(s, '[,}]', last + 1)
    if string.byte(s, j) == 125 then return map, j end
    j = string.find(s, '%S', j + 1)
  end
end

-- Numbers below 1e14 print whole as Lua's %.14g (times in ms, their differences).
local function encode_record(rec)
  local meta, engine = NO_META, NO_META
  if next(rec.meta) ~= nil then
    meta, engine = {}, {}
    for key, value in pairs(rec.meta) do
      local code = META_CODE[key]
      if code then engine[code] = value else meta[key] = value end
    end
    if engine.k and engine.k == kwargs_text(rec.kwargs) then engine.k = '=' end
    if next(meta) == nil then meta = NO_META end
  end
  local ts = rec.ts
  local created = ts.created or 0
  local current = ts[rec.status]
  local head = (TS_CODE[rec.status] or rec.status) .. ' ' .. base36(created)
  for key, at in pairs(ts) do
    if key ~= 'created' and not ((key == 'unstarted' and at == created)
        or (key == 'lastModified' and at == current)) then
      head = head .. ' ' .. (TS_CODE[key] or key) .. (at - created)
    end
  end
  if ts.unstarted == nil then head = head .. ' u' end
  if ts.lastModified == nil then head = head .. ' m' end
  local kwargs = kwargs_text(rec.kwargs)
  local rest
  if rec.lease or meta ~= NO_META or #rec.abandon > 0 then
    rest = cjson.encode({engine, rec.abandon, meta, rec.lease})
  elseif engine ~= NO_META then
    rest = cjson.encode({engine})
  else
    return head .. kwargs
  end
  return head .. '[' .. kwargs .. ',' .. string.sub(rest, 2)
end

local function decode_record(name, raw)
  local first = string.byte(raw, 1)
  if first == 123 then return cjson.decode(raw) end -- "{": the earliest layout
  local a, created, code, times
  if first == 91 then -- "[": the earlier layout, a cjson array, created in decimal
    a = cjson.decode(raw)
    code, created, times = string.match(a[1], '^(%S+) (%-?%d+)(.*)$')
    created = tonumber(created)
  else
    local at = string.find(raw, '[{%[]')
    code, created, times = string.match(string.sub(raw, 1, at - 1), '^(%S+) (%w+)(.*)$')
    created = tonumber(created, 36)
    if string.byte(raw, at) == 123 then
      a = {false, (raw_members(raw, at)), NO_META}
    else
      local kwargs, last = raw_members(raw, at + 1)
      local r = cjson.decode('[' .. string.sub(raw, last + 2)) -- after "<kwargs>,"
      a = {false, kwargs, r[1], r[2], r[3], r[4]}
    end
  end
  local rec = {
    task = task_of(name), status = TS_NAME[code] or code, kwargs = a[2], abandon = a[4] or {},
    meta = a[5] or {}, ts = {created = created}, lease = a[6],
  }
  for c, value in pairs(a[3]) do rec.meta[META_NAME[c] or c] = value end
  if rec.meta.actualKwargs == '=' then rec.meta.actualKwargs = kwargs_text(rec.kwargs) end
  local seen = {}
  for c, delta in string.gmatch(times, ' (%a+)(%-?%d*)') do
    seen[c] = true
    if delta ~= '' then rec.ts[TS_NAME[c] or c] = created + tonumber(delta) end
  end
  if not seen.u then rec.ts.unstarted = created end
  if not seen.m then rec.ts.lastModified = rec.ts[rec.status] end
  return rec
end

local function load_instance(name)
  local raw = redis.call('HGET', K.inst, name)
  if not raw then return nil end
  return decode_record(name, raw)
end

-- Task definitions (the `defs` hash) are stored compact too: cjson with one-letter keys,
-- defaults left out, {a = after (without the every trigger when it is last, where the
-- configuration puts it; it occurs once), u = unless (absent: none), e = every, r = maxRetries
-- (absent: 3), g = using (absent: dramatiq), p = pos, v = config version (each absent: 1, a
-- session's first configuration; the earlier layout always wrote both)}: a small
-- configuration stays within Redis' hash-max-listpack-value (64 bytes), so the hash keeps its
-- compact encoding. decode_def gives every script the full table, {after, unless, every,
-- maxRetries, using, pos, v}; a def with an "after" key is the earlier layout, used as it is.
local function encode_def(def)
  local stored = {a = def.after, e = def.every}
  if def.pos ~= 1 then stored.p = def.pos end
  if def.v ~= 1 then stored.v = def.v end
  if def.every and def.after[#def.after] == def.every then -- the usual place: left out
    stored.a = {unpack(def.after, 1, #def.after - 1)}
  end
  if #def.unless > 0 then stored.u = def.unless end
  if def.maxRetries ~= 3 then stored.r = def.maxRetries end
  if def.using ~= 'dramatiq' then stored.g = def.using end
  return cjson.encode(stored)
end

local function decode_def(raw)
  local d = cjson.decode(raw)
  if d.after then return d end
  if d.e and not contains(d.a, d.e) then d.a[#d.a + 1] = d.e end
  return {
    after = d.a, unless = d.u or {}, every = d.e, maxRetries = d.r or 3, using = d.g,
    pos = d.p or 1, v = d.v or 1,
  }
end

local function load_def(task)
  local raw = redis.call('HGET', K.defs, task)
  if not raw then return nil end
  return decode_def(raw)
end

-- Whether a field of defs is a task's def (not a count "#<task>" or a trigger's "##<trigger>").
local function is_def_field(field)
  return string.byte(field, 1) ~= 35 -- "#"
end

-- A session of the earlier layout kept the instance counts and the trigger index in hashes of
-- their own (counts, trig): the first script that needs either moves them into defs, once
-- (O(tasks + triggers)), so every script after sees one layout. A pure change of
-- representation: a script refused after it leaves the session's state as it was. defs gets
-- the moved keys' time to live (it may not exist yet: a configuration emptied by a replace).
local layout_checked = false
local function adopt_config_layout()
  if layout_checked then return end
  layout_checked = true
  if redis.call('EXISTS', K.counts, K.trig) == 0 then return end
  local ttl = -1
  for key, mark in pairs({[K.counts] = '#', [K.trig] = '##'}) do
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do flat[i] = mark .. flat[i] end
    for first = 1, #flat, 2 * CHUNK do
      redis.call('HSET', K.defs, unpack(flat, first, math.min(first + 2 * CHUNK - 1, #flat)))
    end
    ttl = math.max(ttl, redis.call('PTTL', key))
  end
  redis.call('DEL', K.counts, K.trig)
  if ttl > 0 and redis.call('PTTL', K.defs) < 0 then redis.call('PEXPIRE', K.defs, ttl) end
end

-- The rest of a task's configuration (raw JSON text; what its def does not hold), or false:
-- in defs when it is at most SHORT_REST bytes, so that a small configuration needs no `tasks`
-- key (~90 bytes per key); a longer one in `tasks`, which keeps defs within Redis'
-- hash-max-listpack-value (64 bytes by default; one longer value turns the whole hash into a
-- hash table). A session of an earlier layout has it in `tasks` only.
local SHORT_REST = 64
local function rest_of(task)
  return redis.call('HGET', K.defs, '#@' .. task) or redis.call('HGET', K.tasks, task)
end

-- rest_of for many tasks, in chunked HMGETs (a long configuration's merge answer).
local function rests_of(names)
  local marked = {}
  for i, name in ipairs(names) do marked[i] = '#@' .. name end
  local rests = hmget_all(K.defs, marked)
  local missing, at = {}, {}
  for i, name in ipairs(names) do
    if not rests[i] then
      missing[#missing + 1] = name
      at[#missing] = i
    end
  end
  if #missing > 0 then
    for j, raw in ipairs(hmget_all(K.tasks, missing)) do rests[at[j]] = raw end
  end
  return rests
end

-- Instances of `task` created so far.
local function count_of(task)
  adopt_config_layout()
  return tonumber(redis.call('HGET', K.defs, '#' .. task) or '0')
end

-- The number of the next instance of `task`, counted.
local function next_number(task)
  adopt_config_layout()
  return redis.call('HINCRBY', K.defs, '#' .. task, 1) - 1
end

-- The trigger index ("##<trigger>" fields of defs: the tasks that use each trigger) is kept
-- only for a configuration of more than SCAN_TASKS tasks, marked by the field "##" (no
-- trigger is named ""); configure.lua builds, keeps or drops it. A smaller configuration is
-- scanned instead: its defs hold at most a few fields per task, and a session stores ~50
-- bytes less (issue 11 item 4). Earlier layouts kept the index for every configuration,
-- without the mark: the scan finds its fields and, past SCAN_TASKS tasks, marks it, so a big
-- session of that layout is scanned once (a pure change of representation: that index is
-- complete); a small one keeps being scanned, its index left until its next configure drops
-- it.
local SCAN_TASKS = 8
local INDEX_MARK = '##'

-- The names of the tasks that use `trigger` (after/andEvery/unless), or nil; when defs were
-- scanned, also their stored defs (raw), in the same order.
local function tasks_of_trigger(trigger)
  adopt_config_layout()
  if redis.call('HEXISTS', K.defs, INDEX_MARK) == 1 then
    local raw = redis.call('HGET', K.defs, '##' .. trigger)
    return raw and cjson.decode(raw) or nil
  end
  -- A def can use the trigger only if its text holds the quoted name; a name with a
  -- character JSON writers escape differently (cjson writes "/" as "\/") is looked for in
  -- every def.
  local flat = redis.call('HGETALL', K.defs)
  local quoted = not string.find(trigger, '[/"\\]') and ('"' .. trigger .. '"')
  local names, raws, indexed, tasks = {}, {}, false, 0
  for i = 1, #flat, 2 do
    local field, raw = flat[i], flat[i + 1]
    if is_def_field(field) then
      tasks = tasks + 1
      if not quoted or string.find(raw, quoted, 1, true) then -- decode to be sure
        local def = decode_def(raw)
        if contains(def.after, trigger) or contains(def.unless, trigger) then
          names[#names + 1] = field
          raws[#names] = raw
        end
      end
    elseif string.sub(field, 1, 2) == '##' then
      indexed = true
    end
  end
  if indexed and tasks > SCAN_TASKS then redis.call('HSET', K.defs, INDEX_MARK, '1') end
  if #names == 0 then return nil end
  return names, raws
end

-- Instance events: created (with the status it starts in), then its status, named by what
-- happened (running is "claimed").
local EVENT_OF_STATUS = {running = 'claimed'}
-- The task is left out of the stored event (it is the name's part before "#"): the reader
-- (service/engine/events.py) adds it back.
local function log_instance(name, rec, old_status)
  if not old_status then
    log_shaped({'N', name})
    if rec.status == 'unstarted' then return end
  end
  local code = EVENT_VALUE_CODE[EVENT_OF_STATUS[rec.status] or rec.status]
  log_shaped(old_status and {code, name, EVENT_VALUE_CODE[old_status]} or {code, name})
end

-- The status index (KEYS[6]) is kept only once the session holds more than INDEX_FROM (8)
-- instances: a key costs ~90 bytes, and a few records are found as fast by reading them all
-- (issue 11 item 4). Without it, a script reads every record's status once
-- (STATUS_SCAN.read, name -> status, kept in step by save_instance); the instance that passes
-- INDEX_FROM builds the index from them, and from then on it is kept as before (it never
-- empties: instances stay). A session whose index exists (all of the earlier layout's) keeps
-- it, whatever its size. service/engine/reader.py reads the same way.
local STATUS_SCAN = {kept = nil, read = nil, count = 0}

-- Whether the session keeps its status index; when it does not, STATUS_SCAN.read is read:
-- each record's status from its head (a record of the earliest layout decoded whole).
local function keeps_index()
  if STATUS_SCAN.kept == nil then STATUS_SCAN.kept = redis.call('EXISTS', K.idx) == 1 end
  if STATUS_SCAN.kept then return true end
  if not STATUS_SCAN.read then
    local read, flat = {}, redis.call('HGETALL', K.inst)
    for i = 1, #flat, 2 do
      local raw = flat[i + 1]
      local first = string.byte(raw, 1)
      local status
      if first == 123 then
        status = cjson.decode(raw).status
      else
        status = string.match(raw, first == 91 and '^%["(%a+) ' or '^(%a+) ')
        status = TS_NAME[status] or status
      end
      read[flat[i]] = status
    end
    STATUS_SCAN.read, STATUS_SCAN.count = read, #flat / 2
  end
  return false
end

-- Writes the record and keeps every index (idx, outbox, leases) in step with its status.
-- `old_status` is the status the record had when loaded (nil for a new instance).
local function save_instance(name, rec, old_status)
  if old_status ~= rec.status then
    if keeps_index() then
      if old_status then
        redis.call('ZREM', K.idx, old_status .. ':' .. name)
      end
      redis.call('ZADD', K.idx, 0, rec.status .. ':' .. name)
    else
      if not old_status then STATUS_SCAN.count = STATUS_SCAN.count + 1 end
      STATUS_SCAN.read[name] = rec.status
      if STATUS_SCAN.count > 8 then -- INDEX_FROM: this instance builds the index
        local members = {}
        for held_name, held in pairs(STATUS_SCAN.read) do
          members[#members + 1] = 0
          members[#members + 1] = held .. ':' .. held_name
        end
        for first = 1, #members, 2 * CHUNK do
          redis.call('ZADD', K.idx, unpack(members, first, math.min(first + 2 * CHUNK - 1,
            #members)))
        end
        STATUS_SCAN.kept, STATUS_SCAN.read = true, nil
        -- and inst becomes a hash table for good (Redis never turns one back), as it always was
        -- when records were longer than 64 bytes: a listpack hash reads and writes in O(its
        -- length), up to hash-max-listpack-entries (512) small records. A value past the
        -- default hash-max-listpack-value converts it; removed in the same step.
        redis.call('HSET', K.inst, '#', string.rep('-', 65))
        redis.call('HDEL', K.inst, '#')
      end
    end
    if old_status == 'scheduled' then redis.call('ZREM', K.outbox, name) end
    if old_status == 'running' then
      redis.call('ZREM', K.leases, name)
      rec.lease = nil
    end
    log_instance(name, rec, old_status)
  end
  redis.call('HSET', K.inst, name, encode_record(rec))
end

-- Status change with its timestamps (`created` is set when the record is created).
local function set_status(rec, status)
  rec.status = status
  rec.ts[status] = NOW
  rec.ts.lastModified = NOW
end

local function new_instance(task)
  local n = next_number(task)
  local name = task .. '#' .. n
  local rec = {
    task = task, status = 'unstarted', kwargs = {}, abandon = {}, meta = {},
    ts = {created = NOW, lastModified = NOW, unstarted = NOW},
  }
  return name, rec
end

-- Names of the instances of `task` with `status`, in instance-number order.
local function instances_with(status, task)
  local names = {}
  if keeps_index() then
    local prefix = '[' .. status .. ':' .. task .. '#'
    local members = redis.call('ZRANGEBYLEX', K.idx, prefix, prefix .. '\255')
    local cut = #status + 2
    for i, member in ipairs(members) do
      names[i] = string.sub(member, cut)
    end
  else
    for name, held in pairs(STATUS_SCAN.read) do
      if held == status and task_of(name) == task then names[#names + 1] = name end
    end
  end
  table.sort(names, function(a, b) return number_of(a) < number_of(b) end)
  return names
end

local function has_unresolved(task)
  if not keeps_index() then
    for name, held in pairs(STATUS_SCAN.read) do
      if (held == 'unstarted' or held == 'scheduled' or held == 'running' or held == 'failed')
          and task_of(name) == task then return true end
    end
    return false
  end
  for _, status in ipairs(UNRESOLVED) do
    local prefix = '[' .. status .. ':' .. task .. '#'
    if redis.call('ZLEXCOUNT', K.idx, prefix, prefix .. '\255') > 0 then return true end
  end
  return false
end

-- Instances this script put in the outbox, as {name, runner key, due}: the caller hands them
-- to their runner at once (finish() adds them to the outcome as `dispatch`).
local DISPATCH = {}

-- The runner key of a task ("dramatiq" unless its `using` says otherwise).
local function runner_of(def)
  return def and def.using or 'dramatiq'
end

-- Only an event somebody subscribes to (a global subscription, GLOBAL_EVENTS, or one of the
-- session's webhooks) is recorded: an event nobody hears would cost two scripts (its runner's
-- config read and acknowledgement) for nothing.
local function subscribed(kind)
  for global in string.gmatch(GLOBAL_EVENTS, '[^,]+') do
    if global == '*' or global == kind then return true end
  end
  local raw = redis.call('HGET', K.meta, 'webhooks')
  if not raw then return false end
  for _, hook in ipairs(cjson.decode(raw)) do
    local events = type(hook.events) == 'table' and hook.events or {}
    if contains(events, kind) or contains(events, '*') then return true end
  end
  return false
end

-- An event for subscribers (webhooks), put in the outbox in the same atomic step as the change
-- that caused it, so a crash before its delivery is enqueued cannot lose it (the sweeper
-- re-sends it). Outbox members of events start with "@", which no instance name can.
local function emit_event(event)
  if not subscribed(string.match(event, '^[^:]+')) then return end
  local member = '@' .. event
  redis.call('ZADD', K.outbox, NOW, member)
  DISPATCH[#DISPATCH + 1] = {member, 'webhooks', NOW}
end

-- Marks the instance scheduled and puts it in the outbox, due at `due` (ms).
-- `def` is the task's definition when the caller has it at hand (else it is read).
-- Runners settled at commit (SETTLED: comma-separated keys from the dispatcher's registry,
-- runners whose hand-over is a no-op, `external`): a due entry of theirs is not written to the
-- outbox at all, as if acknowledged at once (ackDispatched would drop it right after); the
-- session's TTL is figured as if it were there. An entry due later stays, for the sweeper.
local function schedule(name, rec, old_status, due, def)
  set_status(rec, 'scheduled')
  save_instance(name, rec, old_status)
  local runner = runner_of(def or load_def(rec.task))
  if due <= NOW and string.find(SETTLED, ',' .. runner .. ',', 1, true) then
    settled_now = true
  else
    redis.call('ZADD', K.outbox, due, name)
  end
  DISPATCH[#DISPATCH + 1] = {name, runner, due, NOW} -- NOW: when it became scheduled
end

-- I3: can_abandon and can_run, against the task's current definition (B11).
local function can_abandon(rec, def)
  if rec.status ~= 'unstarted' or #def.unless == 0 then return false end
  for _, trigger in ipairs(def.unless) do
    if not contains(rec.abandon, trigger) then return false end
  end
  return true
end

local function can_run(rec, def)
  if rec.status ~= 'unstarted' then return false end
  for _, trigger in ipairs(def.after) do
    if rec.kwargs[trigger] == nil then return false end
  end
  return not can_abandon(rec, def)
end

-- D6: offer a fire to an unstarted instance. Returns true when it absorbed an after-trigger.
local function absorb(rec, def, trigger, kwargs)
  local took = false
  if contains(def.after, trigger) and rec.kwargs[trigger] == nil then
    rec.kwargs[trigger] = kwargs
    took = true
  end
  if contains(def.unless, trigger) and not contains(rec.abandon, trigger) then
    rec.abandon[#rec.abandon + 1] = trigger
  end
  return took
end

---------------------------------------------------------------------------------------------
-- Firing (section D) and finalization (L1)
---------------------------------------------------------------------------------------------

-- Set when this script left an unstarted or scheduled instance of a task that does not wait
-- for sessionFinalized: that task is unresolved at the end of the script, so the finalization
-- check (O(tasks)) can be skipped. This keeps a fire's cost independent of the configuration.
local blocked_by_this_change = false

-- The outcome every changing script returns: fires (each with what it scheduled and
-- abandoned, in order, for post-fire hooks), and whether the session was just finalized.
local function new_outcome()
  return {fires = {}, finalized = false}
end

-- D7: a new instance pre-filled from the latest kwargs of the other triggers.
local function prefill(rec, def, trigger)
  local others = {}
  for _, t in ipairs(def.after) do
    if t ~= trigger then others[#others + 1] = t end
  end
  if #others > 0 then
    local fields = {}
    for i, t in ipairs(others) do fields[i] = latest_field(t) end
    local values = hmget_all(K.meta, fields)
    for i, t in ipairs(others) do
      if values[i] then rec.kwargs[t] = values[i] end
    end
  end
  for _, t in ipairs(def.unless) do
    if t ~= trigger and redis.call('HEXISTS', K.meta, latest_field(t)) == 1 then
      rec.abandon[#rec.abandon + 1] = t
    end
  end
end

-- The tasks a trigger is relevant to (D3), in configuration order (D4).
local function relevant_tasks(trigger)
  local names, raws = tasks_of_trigger(trigger)
  if not names then return {} end
  local defs = raws or hmget_all(K.defs, names)
  local tasks = {}
  for i, name in ipairs(names) do
    if defs[i] then tasks[#tasks + 1] = {name = name, def = decode_def(defs[i])} end
  end
  table.sort(tasks, function(a, b) return a.def.pos < b.def.pos end)
  return tasks
end

-- D4-D8 for one relevant task; appends to record.scheduled / record.abandoned.
local function fire_into_task(task, def, trigger, kwargs, record)
  local open = instances_with('unstarted', task)
  local candidates = {}
  local absorbed = false
  for _, name in ipairs(open) do
    local rec = load_instance(name)
    if absorb(rec, def, trigger, kwargs) then absorbed = true end
    candidates[#candidates + 1] = {name = name, rec = rec, old = 'unstarted'}
  end
  local exists = count_of(task) > 0
  if not exists or (trigger == def.every and not absorbed) then
    local name, rec = new_instance(task)
    prefill(rec, def, trigger)
    absorb(rec, def, trigger, kwargs)
    candidates[#candidates + 1] = {name = name, rec = rec, old = nil}
  end
  local waits_for_final = contains(def.after, FINAL_TRIGGER)
  for _, c in ipairs(candidates) do
    if can_abandon(c.rec, def) then
      set_status(c.rec, 'abandoned')
      save_instance(c.name, c.rec, c.old)
      record.abandoned[#record.abandoned + 1] = c.name
    elseif can_run(c.rec, def) then
      schedule(c.name, c.rec, c.old, NOW, def)
      record.scheduled[#record.scheduled + 1] = c.name
      if not waits_for_final then blocked_by_this_change = true end
    else
      save_instance(c.name, c.rec, c.old)
      if not waits_for_final then blocked_by_this_change = true end -- stays unstarted
    end
  end
end

-- `tasks`: relevant_tasks(trigger) when the caller already read them (fire.lua does, to check
-- the instance limit first).
local function fire(trigger, kwargs, outcome, tasks)
  log_shaped({'F', trigger, #kwargs})
  local record = {trigger = trigger, scheduled = {}, abandoned = {}}
  for _, task in ipairs(tasks or relevant_tasks(trigger)) do
    fire_into_task(task.name, task.def, trigger, kwargs, record)
  end
  redis.call('HSET', K.meta, latest_field(trigger), kwargs) -- D9
  if trigger == FINAL_TRIGGER and redis.call('HSETNX', K.meta, 'finalized', '1') == 1 then
    redis.call('HSET', K.meta, 'finalizedAt', NOW)
    outcome.finalized = true
    log_shaped({'Z'})
    emit_event('sessionFinalized')
  end
  outcome.fires[#outcome.fires + 1] = record
  return record
end

-- LIMIT refusal (before any write) when `adding` more instances would take the session past
-- `max_instances` (TRIGGERS_MAX_INSTANCES; 0: no limit). HLEN is O(1): no counter to keep.
local function instance_limit_error(adding, max_instances)
  if max_instances <= 0 or adding <= 0 then return nil end
  local held = redis.call('HLEN', K.inst)
  if held + adding <= max_instances then return nil end
  return fail_with('LIMIT', 'instances: the session holds ' .. held .. ' instances and this '
    .. 'would add ' .. adding .. ', more than TRIGGERS_MAX_INSTANCES (' .. max_instances .. ')')
end

-- LIMIT refusal (before any write) when `adding` more unstarted instances would take the
-- session past `max_open` (TRIGGERS_MAX_OPEN_INSTANCES; 0: no limit). A fire visits every
-- unstarted instance of the tasks it concerns, so this bounds its cost. ZLEXCOUNT: O(log n).
local function open_limit_error(adding, max_open)
  if max_open <= 0 or adding <= 0 then return nil end
  local open = 0
  if keeps_index() then
    open = redis.call('ZLEXCOUNT', K.idx, '[unstarted:', '[unstarted:\255')
  else
    for _, held in pairs(STATUS_SCAN.read) do
      if held == 'unstarted' then open = open + 1 end
    end
  end
  if open + adding <= max_open then return nil end
  return fail_with('LIMIT', 'instances: the session holds ' .. open .. ' unstarted instances '
    .. 'and this would add up to ' .. adding .. ', more than TRIGGERS_MAX_OPEN_INSTANCES ('
    .. max_open .. ')')
end

-- How many instances a fire of `trigger` into `tasks` (relevant_tasks) may create: one per task
-- with no instance yet or repeated by this trigger (andEvery), an upper bound read in O(tasks).
local function instances_a_fire_may_create(trigger, tasks)
  local count = 0
  for _, task in ipairs(tasks) do
    if trigger == task.def.every or count_of(task.name) == 0 then
      count = count + 1
    end
  end
  return count
end

-- L1, atomically: every unresolved task (K2) waits for sessionFinalized -> fire it, once.
-- A session with no task is never finalized (the original would finalize it on its first
-- fire, before any configuration arrived; see the engine's notes).
local function finalize_if_ready(outcome)
  if not FINALIZE or blocked_by_this_change then return end
  if redis.call('HEXISTS', K.meta, latest_field(FINAL_TRIGGER)) == 1 then return end
  adopt_config_layout()
  local fields = redis.call('HGETALL', K.defs)
  local defs, started = {}, {}
  for i = 1, #fields, 2 do
    if is_def_field(fields[i]) then
      defs[#defs + 1] = {fields[i], fields[i + 1]}
    else
      started[fields[i]] = true
    end
  end
  if #defs == 0 then return end
  for _, item in ipairs(defs) do
    local task, def = item[1], decode_def(item[2])
    local unresolved = not started['#' .. task] or has_unresolved(task)
    if unresolved and not contains(def.after, FINAL_TRIGGER) then return end
  end
  fire(FINAL_TRIGGER, '{}', outcome)
end

-- Ends every changing script: finalization check, TTL, and the encoded outcome.
local function finish(outcome, extra)
  finalize_if_ready(outcome)
  apply_ttl()
  if extra then
    for key, value in pairs(extra) do outcome[key] = value end
  end
  if outcome.instance then outcome.record = redis.call('HGET', K.inst, outcome.instance) end
  if #DISPATCH > 0 then outcome.dispatch = DISPATCH end
  return answer(cjson.encode(outcome))
end

-- Loads an instance for a transition or returns the error reply to send (second value).
local function instance_or_error(name)
  local rec = load_instance(name)
  if not rec then
    return nil, fail_with('NOT_FOUND', 'instance ' .. name .. ' does not exist')
  end
  return rec, nil
end

-- For worker transitions: the instance must be running under this lease token.
local function check_lease(name, rec, token)
  if rec.status ~= 'running' then
    return fail_with('CONFLICT', 'instance ' .. name .. ' is ' .. rec.status .. ', not running')
  end
  if not rec.lease or rec.lease.token ~= token then
    return fail_with('CONFLICT', 'stale lease token for instance ' .. name)
  end
  return nil
end

-- H1 clone: next number (C4), abandon state copied, kwargs as given, parent and depth only.
local function clone_of(parent_name, parent, kwargs)
  local name, rec = new_instance(parent.task)
  for i, t in ipairs(parent.abandon) do rec.abandon[i] = t end
  rec.kwargs = kwargs
  local depth = tonumber(parent.meta.depth or '0') or 0
  rec.meta.parent = cjson.encode(parent_name)
  rec.meta.depth = tostring(depth + 1)
  return name, rec
end

-- Replacement kwargs argument: "" keeps the parent's, else a cjson map trigger -> raw JSON.
local function replacement_kwargs(arg, parent)
  if arg == '' then return parent.kwargs end
  return cjson.decode(arg)
end

---------------------------------------------------------------------------------------------
-- Reading the configuration
---------------------------------------------------------------------------------------------

-- Every configured task as {name, def}, in configuration order.
local function tasks_in_order()
  local defs = redis.call('HGETALL', K.defs)
  local order = {}
  for i = 1, #defs, 2 do
    if is_def_field(defs[i]) then
      order[#order + 1] = {name = defs[i], def = decode_def(defs[i + 1])}
    end
  end
  table.sort(order, function(a, b) return a.def.pos < b.def.pos end)
  return order
end

-- A JSON list of names, [] when empty (cjson would write {}).
local function json_list(list)
  local parts = {}
  for i, item in ipairs(list) do parts[i] = cjson.encode(item) end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- A task's configuration as JSON text, from its def and its stored remainder `rest` (the
-- `tasks` hash: what the client gave beyond the def's fields, raw JSON that Lua never
-- decodes: withParams, run, custom directives). The def's fields come first, so a remainder
-- of the earlier layout (the whole configuration) repeats them and its values win (JSON
-- readers keep the last of duplicate keys): both layouts read the same.
local function config_text(def, rest)
  local every = def.every and (',"andEvery":' .. cjson.encode(def.every)) or ''
  local inner = rest and string.sub(rest, 2, -2) or ''
  if inner ~= '' then inner = ',' .. inner end
  return '{"after":' .. json_list(def.after) .. ',"unless":' .. json_list(def.unless) .. every
    .. ',"using":' .. cjson.encode(def.using or 'dramatiq') .. ',"maxRetries":'
    .. string.format('%d', def.maxRetries or 3) .. inner .. '}'
end

-- The configuration text of one task, or false when it has none.
local function task_config(task)
  local def = load_def(task)
  if not def then return false end
  return config_text(def, rest_of(task))
end

-- cjson {tasks = [[name, raw config], ...] in order, webhooks = raw JSON or nil}.
local function config_reply()
  local tasks = {}
  for i, item in ipairs(tasks_in_order()) do
    tasks[i] = {item.name, config_text(item.def, rest_of(item.name))}
  end
  return cjson.encode({tasks = tasks, webhooks = redis.call('HGET', K.meta, 'webhooks')})
end
