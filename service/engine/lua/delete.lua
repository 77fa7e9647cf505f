--[=[
delete: remove the session and everything in it. Keys: all ten session keys, all deleted.
Returns 1 if the session existed, else 0.
]=]
local existed = session_exists() and 1 or 0
redis.call('DEL', unpack(KEYS))
return existed
