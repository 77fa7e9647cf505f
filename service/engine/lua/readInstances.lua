--[=[
readInstances: instances of the session, filtered without scanning where an index allows it.

Keys: all session keys; reads meta, inst, idx, counts.
ARGV[5] status filter or "", ARGV[6] task filter or "", ARGV[7..] explicit instance names
(when given, only those, and the filters are not used).
Returns a flat list name, record, ... (an explicit name that does not exist is left out).
NOT_FOUND for an unknown session.
]=]
if not session_exists() then return fail_with('NOT_FOUND', 'session does not exist') end
local status, task = ARGV[5], ARGV[6]
local names = {}
if NARGV >= 7 then
  for i = 7, NARGV do names[#names + 1] = ARGV[i] end
elseif status ~= '' then
  local prefix = '[' .. status .. ':' .. task
  if task ~= '' then prefix = prefix .. '#' end
  for _, member in ipairs(redis.call('ZRANGEBYLEX', K.idx, prefix, prefix .. '\255')) do
    names[#names + 1] = string.sub(member, #status + 2)
  end
elseif task ~= '' then
  local count = tonumber(redis.call('HGET', K.counts, task) or '0')
  for n = 0, count - 1 do names[#names + 1] = task .. '#' .. n end
else
  return redis.call('HGETALL', K.inst)
end
local out = {}
if #names == 0 then return out end
local records = redis.call('HMGET', K.inst, unpack(names))
for i, name in ipairs(names) do
  if records[i] then
    out[#out + 1] = name
    out[#out + 1] = records[i]
  end
end
return out
