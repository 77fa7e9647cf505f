--[=[
setMetadata: shallow-merge metadata into an instance, any status (H4; H5 marks logs resolved
with {"logsResolved": true}). Status and status timestamps stay; lastModified moves.

Keys: all session keys; writes inst and meta.
ARGV[5] instance name, ARGV[6] cjson map key -> raw JSON
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local name = ARGV[5]
local rec, err = instance_or_error(name)
if err then return err end
touch()
log_event('operator', {action = 'metadata', instance = name})
for key, raw in pairs(cjson.decode(ARGV[6])) do rec.meta[key] = raw end
rec.ts.lastModified = NOW
save_instance(name, rec, rec.status)
return finish(new_outcome(), {instance = name})
