--[=[
prunePending: drop a session from the global pending index if nobody re-marked it since the
sweeper looked (it is not part of any session; it gets no library and touches one key).

KEYS[1] the pending index (zset uid -> last time a change that could schedule work ran)
ARGV[1] session uid, ARGV[2] the time (ms) the sweeper found the session's outbox and leases
empty. A change that marked the session later has a higher score and keeps it.
]=]
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
