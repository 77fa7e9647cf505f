--[=[
rescorePending: after the sweeper visited a session, set when it next needs a visit, or drop it
from the pending index when nothing is outstanding (it is not part of any session: no library,
its own two keys, which share the hash tag of the index).

KEYS[1] the pending index: zset uid -> when the session next needs the sweeper (ms)
KEYS[2] the marks: hash uid -> time (ms) of the latest change that marked the session
ARGV[1] session uid
ARGV[2] the score the sweeper read before it swept the session
ARGV[3] when the session next needs attention, from the sweep (ms); "" when nothing is left
ARGV[4] the time (ms) the sweeper read the index
ARGV[5] settle (ms): how long a change may take between its mark and its script
Returns 1 when the session stays in the index, 0 when it left.

Why this is safe against a concurrent change (which marks before its script and, when it
scheduled something, again after it): a change whose script ran before the sweep was seen by
it. A change whose script ran after the sweep marked the session at or after the read (after
its script), or at most `settle` before it (before its script): either way its mark is recent,
so the session is kept due by that mark + settle at the latest, and a later visit sees the
change. A score changed since the read (a mark lowered it) is only ever lowered here.
]=]
local uid = ARGV[1]
local target = tonumber(ARGV[3])
local settle = tonumber(ARGV[5])
local mark = tonumber(redis.call('HGET', KEYS[2], uid) or '')
if mark and mark >= tonumber(ARGV[4]) - settle then
  if not target or mark + settle < target then target = mark + settle end
elseif mark then
  redis.call('HDEL', KEYS[2], uid)
end
local current = redis.call('ZSCORE', KEYS[1], uid)
if current and tonumber(current) ~= tonumber(ARGV[2]) then
  if target then redis.call('ZADD', KEYS[1], 'LT', target, uid) end
  return 1
end
if target then
  redis.call('ZADD', KEYS[1], target, uid)
  return 1
end
redis.call('ZREM', KEYS[1], uid)
return 0
