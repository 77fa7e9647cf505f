--[=[
renewLease: the running worker extends its lease so the sweeper does not re-dispatch it.

Keys: all session keys; writes inst and leases, and applies the session TTL (a session never
expires under a task that is still running).
ARGV[5] instance name, ARGV[6] lease token, ARGV[7] lease length in ms from now
Returns cjson {expires = ms}. CONFLICT when the instance is not running under this token (the
lease was lost: the worker should stop and report nothing).
]=]
local name, token, lease_ms = ARGV[5], ARGV[6], tonumber(ARGV[7])
local rec, err = instance_or_error(name)
if err then return err end
local stale = check_lease(name, rec, token)
if stale then return stale end
rec.lease.exp = NOW + lease_ms
redis.call('HSET', K.inst, name, encode_record(rec))
redis.call('ZADD', K.leases, rec.lease.exp, name)
apply_ttl()
return cjson.encode({expires = rec.lease.exp})
