--[=[
finalizeIfReady: the finalization check of L1 on its own (every changing script also runs it
at its end when ARGV[2] is "1"). Fires sessionFinalized once if every unresolved task waits for
it. Keys: all session keys. Returns the outcome. NOT_FOUND for an unknown session.
]=]
if not session_exists() then
  return fail_with('NOT_FOUND', 'session does not exist')
end
local outcome = new_outcome()
finalize_if_ready(outcome)
if #outcome.fires > 0 then touch() end
apply_ttl()
return cjson.encode(outcome)
