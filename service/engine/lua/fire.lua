--[=[
fire: fire a trigger into the session (section D), creating the session if needed (C3, D12).

Keys: all session keys; reads defs (with the trigger index); writes meta (the latest kwargs
too), inst, idx, defs (instance counts), outbox (and leases never). Cost: O(tasks using the
trigger + their unstarted instances).
ARGV[5] trigger name
ARGV[6] kwargs of this fire, raw JSON object text
ARGV[7] most instances the session may hold (TRIGGERS_MAX_INSTANCES; "0" or absent: no limit):
        a fire that may create instances past it is refused (LIMIT) before any write
ARGV[8] most unstarted instances the session may hold (TRIGGERS_MAX_OPEN_INSTANCES; "0" or
        absent: no limit), checked the same way: it bounds what one fire visits
Returns: the outcome (includes/lib.lua new_outcome): the fire with the instances it scheduled
(now in the outbox) and abandoned; then, if it completed the session, the sessionFinalized fire.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local tasks = relevant_tasks(ARGV[5])
local creating = instances_a_fire_may_create(ARGV[5], tasks)
local too_many = instance_limit_error(creating, tonumber(ARGV[7]) or 0)
  or open_limit_error(creating, tonumber(ARGV[8]) or 0)
if too_many then return too_many end
local outcome = new_outcome()
touch()
fire(ARGV[5], ARGV[6], outcome, tasks)
return finish(outcome)
