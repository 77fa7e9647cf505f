--[=[
fire: fire a trigger into the session (section D), creating the session if needed (C3, D12).

Keys: all session keys; reads defs and trig; writes meta, inst, idx, latest, counts, outbox
(and leases never). Cost: O(tasks using the trigger + their unstarted instances).
ARGV[5] trigger name
ARGV[6] kwargs of this fire, raw JSON object text
Returns: the outcome (includes/lib.lua new_outcome): the fire with the instances it scheduled
(now in the outbox) and abandoned; then, if it completed the session, the sessionFinalized fire.
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local outcome = new_outcome()
touch()
fire(ARGV[5], ARGV[6], outcome)
return finish(outcome)
