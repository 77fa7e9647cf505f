--[=[
replay: an operator re-runs a failed instance as a clone (H1).

Keys: all session keys; writes inst, idx, defs (instance counts), outbox, meta.
ARGV[5] instance name
ARGV[6] replacement kwargs: "" keeps the parent's; else cjson map trigger -> raw JSON, which
        replaces the parent's whole map ({} means no kwargs)
ARGV[7] most instances the session may hold (TRIGGERS_MAX_INSTANCES; "0" or absent: no limit):
        a replay whose clone would pass it is refused (LIMIT) before any write
The parent becomes replayed; the clone (next number, abandon state copied, metadata = parent
and depth only) is scheduled at once without can_run or can_abandon checks.
Returns: the outcome, with replayed (parent) and clone (name). CONFLICT unless failed.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name = ARGV[5]
local rec, err = instance_or_error(name)
if err then return err end
if rec.status ~= 'failed' then
  return fail_with('CONFLICT', 'instance ' .. name .. ' is ' .. rec.status
    .. '; only a failed instance can be replayed')
end

local too_many = instance_limit_error(1, tonumber(ARGV[7]) or 0)
if too_many then return too_many end

local outcome = new_outcome()
touch()
log_event('operator', {action = 'replay', instance = name})
set_status(rec, 'replayed')
save_instance(name, rec, 'failed')
local clone_name, clone = clone_of(name, rec, replacement_kwargs(ARGV[6], rec))
schedule(clone_name, clone, nil, NOW)
return finish(outcome, {instance = name, replayed = name, clone = clone_name})
