--[=[
setMetadata: shallow-merge metadata into an instance, any status (H4; H5 marks logs resolved
with {"logsResolved": true}). Status and status timestamps stay; lastModified moves.

Keys: all ten session keys; writes inst and meta.
ARGV[3] instance name, ARGV[4] cjson map key -> raw JSON
]=]
local name = ARGV[3]
local rec, err = instance_or_error(name)
if err then return err end
touch()
for key, raw in pairs(cjson.decode(ARGV[4])) do rec.meta[key] = raw end
rec.ts.lastModified = NOW_ISO
save_instance(name, rec, rec.status)
return finish(new_outcome(), {instance = name})
