--[=[
readConfig: the session's configuration (tasks in configuration order, webhooks).
Keys: all session keys; reads meta, tasks, defs. NOT_FOUND for an unknown session.
Returns cjson {tasks = [[name, raw config], ...], webhooks = raw JSON or nil}.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end
return config_reply()
