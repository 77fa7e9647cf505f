--[=[
delete: remove the session and everything in it. Keys: all session keys; the ten of the
session, its webhook delivery records and its event log are deleted (Idempotency-Key records
expire on their own).
Returns "1" if the session existed, else "0".
]=]
local replayed = replayed_answer()
if replayed then return replayed end
local existed = session_exists() and '1' or '0'
for i = 1, 10 do redis.call('DEL', KEYS[i]) end
redis.call('DEL', K.deliveries, K.delivery_due, K.events)
return answer(existed)
