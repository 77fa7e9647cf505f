--[=[
rescorePending: after the sweeper visited a session, set when it next needs a visit, or drop it
from the pending index when nothing is outstanding (it is not part of any session: no library,
its own three keys, which share the hash tag of the index).

KEYS[1] the pending index: zset uid -> when the session next needs the sweeper (ms)
KEYS[2] pre-marks: hash uid -> time (ms) of the latest mark made BEFORE a change's script
KEYS[3] post-marks: hash uid -> time (ms) of the latest mark made AFTER a change's script
        (one that scheduled something: its due time + grace)
ARGV[1] session uid
ARGV[2] the score the sweeper read before it swept the session
ARGV[3] when the session next needs attention, from the sweep (ms); "" when nothing is left
ARGV[4] the time (ms) the sweeper read the index
ARGV[5] settle (ms): the longest a change may take between its pre-mark and its script
ARGV[6] hold (ms): how long a recent pre-mark keeps the session watched (the shortest ahead
        a pre-mark looks: a claim's lease)
Returns 1 when the session stays in the index, 0 when it left.

Why a change racing the sweep never drops its session from the index. A change whose script
ran before the sweep script was seen by it. A change whose script ran after it:
* if its caller lives, it post-marked after its script, so after the sweep: at or after the
  read, a recent post-mark; the session stays watched by that mark + settle (no later than
  what the change asked for, its due time + grace) and the next visit sees the change;
* if its caller died after its script, its pre-mark came at most `settle` before its script,
  so at most `settle` before the read or after it: a recent pre-mark; the session stays
  watched by that mark + hold, no later than the pre-mark itself asked.
A score lowered since the read (by a mark) is only ever lowered here. Marks older than settle
have landed: they are forgotten, and only then can the session leave the index.
]=]
local uid = ARGV[1]
local target = tonumber(ARGV[3])
local recent_after = tonumber(ARGV[4]) - tonumber(ARGV[5])
local function within(marks, keep_for)
  local mark = tonumber(redis.call('HGET', marks, uid) or '')
  if not mark then return end
  if mark >= recent_after then
    if not target or mark + keep_for < target then target = mark + keep_for end
  else
    redis.call('HDEL', marks, uid)
  end
end
within(KEYS[2], tonumber(ARGV[6]))
within(KEYS[3], tonumber(ARGV[5]))
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
