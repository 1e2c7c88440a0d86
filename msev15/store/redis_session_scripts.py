"""The Lua scripts of the ``redis`` session store (:mod:`msev15.store.redis_sessions`).

COMMIT, EVICT and DELETE touch one tenant's keys only (``msev15:{tenant}:…``, one hash slot):
each runs atomically, on a Redis Cluster too. They build the keys of other sessions of the same
tenant from the tenant's key prefix (same hash tag, so same slot). SETTLE touches only the global
accounting keys (``msev15:{#sessions}:…``, another slot), so it never runs in the same script
as a commit.

A message in a session's list is the JSON array ``[role, content, ts, extra, bytes]``; ``bytes``
is :func:`msev15.store.sessions.message_bytes` (what it costs against SESSION_MAX_BYTES). Lists
written before it was stored hold four elements: their size is computed here from the text.
"""

from __future__ import annotations

from msev15.store.redis_deadline import deadline_check

# Shared helpers: size and visibility of a decoded message, and dropping a whole session.
_HELPERS = """
local function size(m)
  if type(m[5]) == 'number' then return m[5] end
  local n = 0
  if type(m[2]) == 'string' then n = #m[2] end
  if type(m[4]) == 'table' then
    for _, call in ipairs(m[4]) do
      local f = type(call) == 'table' and call['function'] or nil
      if type(f) == 'table' then
        if type(f.arguments) == 'string' then n = n + #f.arguments end
        if type(f.name) == 'string' then n = n + #f.name end
      end
    end
  end
  return n
end
local function visible(m)
  -- a person's message carries {author: ...}; an assistant message with tool calls is not shown
  return m[1] == 'user' or (m[1] == 'assistant' and (m[4] == cjson.null or
    (type(m[4]) == 'table' and m[4].author ~= nil)))
end
local function drop(index, prefix, id)
  redis.call('DEL', prefix .. 'sess:' .. id, prefix .. 'msgs:' .. id)
  return redis.call('ZREM', index, id)
end
local function prune(index, prefix, cutoff)
  -- idle sessions past the TTL leave the index (their keys expire by themselves; deleted anyway)
  local n = 0
  if cutoff == '' then return 0 end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, 100)) do
    if drop(index, prefix, id) == 1 then
      n = n + 1
      -- for the sweeper, which drops what hangs on the session (Sessions.gone)
      redis.call('RPUSH', prefix .. 'gone', id)
    end
  end
  if n > 0 then redis.call('LTRIM', prefix .. 'gone', -100000, -1) end
  return n
end
"""

PRUNE_BATCH = 100  # the LIMIT in prune(): a reply of this many means there may be more

COMMIT = _HELPERS + """
-- KEYS: session hash, message list, tenant index, turn queue
-- ARGV: 1 session_id, 2 now, 3 started_at, 4 max_messages, 5 ttl_ms, 6 fence, 7 max_bytes (0: none),
--       8 the tenant's session cap, 9 the tenant's key prefix, 10 expiry cutoff ('' without a TTL),
--       11 visible messages in the turn, 12 bytes of the turn, 13 deadline on Redis's clock ('' none),
--       14 this commit's revision (unique), 15.. the turn's messages
-- Returns {visible count, 1 if the session joined the index, sessions evicted, expired dropped,
-- the revision the turn was appended to ('' for none: a new, restarted or older session), the
-- list's length after it};
-- {-1, 0, 0, 0} when the fence no longer heads the queue, {-2, 0, 0, 0} past the deadline (its
-- client has given up: store/redis_deadline.py); nothing is written then.
""" + deadline_check(13, "{-2, 0, 0, 0}") + """
if ARGV[6] ~= '' and redis.call('LINDEX', KEYS[4], 0) ~= ARGV[6] then
  return {-1, 0, 0, 0}
end
local prefix, cutoff = ARGV[9], ARGV[10]
local expired = 0
if cutoff ~= '' then
  local last = redis.call('HGET', KEYS[1], 'last_activity')
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if (last and tonumber(last) <= tonumber(cutoff)) or (score and tonumber(score) <= tonumber(cutoff)) then
    expired = drop(KEYS[3], prefix, ARGV[1])  -- idle past its TTL: the turn starts it afresh
  end
  expired = expired + prune(KEYS[3], prefix, cutoff)
end
local previous = redis.call('HGET', KEYS[1], 'rev') or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'created_at', ARGV[3], 'visible_count', 0, 'bytes', 0)
elseif redis.call('HEXISTS', KEYS[1], 'bytes') == 0 then
  local total = 0  -- written before sessions counted their bytes: count them once
  for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do total = total + size(cjson.decode(item)) end
  redis.call('HSET', KEYS[1], 'bytes', total)
end
for i = 15, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local visible_count = redis.call('HINCRBY', KEYS[1], 'visible_count', tonumber(ARGV[11]))
local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', tonumber(ARGV[12]))
redis.call('HSET', KEYS[1], 'last_activity', ARGV[2], 'rev', ARGV[14])
local length = redis.call('LLEN', KEYS[2])

local function cut_front(cut)  -- drop the oldest `cut` messages
  local seen, freed = 0, 0
  for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, cut - 1)) do
    local m = cjson.decode(item)
    if visible(m) then seen = seen + 1 end
    freed = freed + size(m)
  end
  redis.call('LTRIM', KEYS[2], cut, -1)
  visible_count = redis.call('HINCRBY', KEYS[1], 'visible_count', -seen)
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -freed)
  length = length - cut
end

local max = tonumber(ARGV[4])
if length > max then
  -- drop the oldest whole turns: cut at the first user message at or after the excess
  local excess = length - max
  local cut = excess
  for i, item in ipairs(redis.call('LRANGE', KEYS[2], excess, -1)) do
    if cjson.decode(item)[1] == 'user' then cut = excess + i - 1 break end
  end
  cut_front(cut)
end
local max_bytes = tonumber(ARGV[7])
if max_bytes > 0 and bytes > max_bytes then
  -- drop the oldest whole turns: cut at the first turn start with enough bytes before it, else
  -- at the newest turn's start (the newest turn always stays), as the memory store does
  local over, freed, cut, i, done = bytes - max_bytes, 0, 0, 0, false
  while not done and i < length do
    local chunk = redis.call('LRANGE', KEYS[2], i, i + 31)
    if #chunk == 0 then break end
    for _, item in ipairs(chunk) do
      local m = cjson.decode(item)
      if m[1] == 'user' and i > 0 then
        cut = i
        if freed >= over then done = true break end
      end
      freed = freed + size(m)
      i = i + 1
    end
  end
  if cut > 0 then cut_front(cut) end
end
-- newest activity last, commit order kept when two commits share a timestamp
local score = tonumber(ARGV[2])
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 0.000001 end
local joined = redis.call('ZADD', KEYS[3], score, ARGV[1])
local evicted = 0
if joined == 1 then
  -- the tenant's own cap: its least recently active go (never the session just committed)
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[8])
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
      if id ~= ARGV[1] then evicted = evicted + drop(KEYS[3], prefix, id) end
    end
  end
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  -- not the index: its entries leave it through prune(), so the global counts see them go (it is
  -- capped by the tenant's session cap)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {visible_count, joined, evicted, expired, previous, length}
"""

EVICT = _HELPERS + """
-- KEYS: tenant index; ARGV: the tenant's key prefix, expiry cutoff ('' without a TTL),
-- sessions to evict, a session id never to evict ('' none)
-- Returns {sessions evicted, expired dropped, sessions the tenant holds now}: the least recently
-- active go first.
local expired = prune(KEYS[1], ARGV[1], ARGV[2])
local want, evicted = tonumber(ARGV[3]), 0
if want > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, want)) do
    if evicted < want and id ~= ARGV[4] then evicted = evicted + drop(KEYS[1], ARGV[1], id) end
  end
end
return {evicted, expired, redis.call('ZCARD', KEYS[1])}
"""

DELETE = """
-- KEYS: session hash, message list, tenant index; ARGV: session_id
-- Returns {visible count or -1 if unknown, 1 if it left the index}
local visible = redis.call('HGET', KEYS[1], 'visible_count')
local left = redis.call('ZREM', KEYS[3], ARGV[1])
if not visible then return {-1, left} end
redis.call('DEL', KEYS[1], KEYS[2])
return {tonumber(visible), left}
"""

SETTLE = """
-- KEYS: sessions per tenant (sorted set), sessions in all (counter)
-- ARGV: 1 max_sessions, 2 the committing tenant ('' none), then pairs: tenant, change in its count
--       (or '=n': the tenant holds n, read from its index after a claim found less than counted)
-- Applies the changes (a count never goes below 0), then claims one eviction per session over
-- max_sessions, each from the tenant holding the most (on a tie, the last tenant id in byte
-- order), taking it off that tenant's count at once, so two instances settling at the same time
-- never both evict for the same excess. The committing tenant is passed over while its only
-- session is the one just committed. Returns {sessions in all, claimed tenant...}.
for i = 3, #ARGV, 2 do
  local tenant, change = ARGV[i], ARGV[i + 1]
  local old = tonumber(redis.call('ZSCORE', KEYS[1], tenant) or '0')
  local new
  if string.sub(change, 1, 1) == '=' then new = tonumber(string.sub(change, 2))
  else new = math.max(0, old + tonumber(change)) end
  if new > 0 then redis.call('ZADD', KEYS[1], new, tenant) else redis.call('ZREM', KEYS[1], tenant) end
  if new ~= old then redis.call('INCRBY', KEYS[2], new - old) end
end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local max = tonumber(ARGV[1])
local reply = {total}
while total > max and #reply <= 64 do
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 1, 'WITHSCORES')
  local tenant, held = top[1], tonumber(top[2] or '0')
  if tenant == ARGV[2] and held <= 1 then tenant, held = top[3], tonumber(top[4] or '0') end
  if not tenant or held < 1 then break end
  if held > 1 then redis.call('ZADD', KEYS[1], held - 1, tenant) else redis.call('ZREM', KEYS[1], tenant) end
  total = redis.call('DECR', KEYS[2])
  reply[1] = total
  reply[#reply + 1] = tenant
end
return reply
"""

CONTEXT = """
-- KEYS: the session's hash, its message list. ARGV: how many of the newest messages, the revision
-- the reader holds them for ('' none).
-- Returns {} for an unknown session; {last_activity, revision} when the reader's revision is
-- current (its copy is the list's tail); else {last_activity, revision or '', the messages}.
local meta = redis.call('HMGET', KEYS[1], 'last_activity', 'rev')
if not meta[1] then return {} end
if ARGV[2] ~= '' and meta[2] == ARGV[2] then return {meta[1], meta[2]} end
return {meta[1], meta[2] or '', redis.call('LRANGE', KEYS[2], -tonumber(ARGV[1]), -1)}
"""

SET_MODE = """
-- KEYS: 1 the session's hash. ARGV: 1 mode, 2 the mode it must have ('' for any),
--       3 the TTL cutoff ('' without a TTL).
-- Returns 1 when the mode was set; 0 for an unknown or idle session, or another mode.
local last = redis.call('HGET', KEYS[1], 'last_activity')
if not last or (ARGV[3] ~= '' and tonumber(last) <= tonumber(ARGV[3])) then return 0 end
local mode = redis.call('HGET', KEYS[1], 'mode') or 'agent'
if ARGV[2] ~= '' and mode ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'mode', ARGV[1])
return 1
"""
