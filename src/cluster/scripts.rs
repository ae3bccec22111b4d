//! The Lua scripts the link runs in Redis: each is one atomic step (a name claimed or
//! let go, a private message routed, a list read) that would otherwise take several
//! round trips and leave a window for another node.
//!
//! A node instance is `<node-id>/<random>`; it is alive while `loopchat:alive:<node-id>`
//! names it. A name's value is `<instance> <since_ms>`; a member's is
//! `<instance> <name>`.

use redis::{Connection, Script};

/// `alive(instance)`: whether the node instance still runs (its alive key names it).
const LUA_ALIVE: &str = r#"
local function alive(inst)
  if not inst then return false end
  local node = string.match(inst, '^(.*)/[^/]*$')
  if not node then return false end
  return redis.call('GET', 'loopchat:alive:' .. node) == inst
end
"#;

/// KEYS[1] = name key; ARGV = instance, since_ms, mode (new | force | reclaim).
/// Returns {won, previous live owner or ''}.
const LUA_CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
local me, mode = ARGV[1], ARGV[3]
if cur then
  local owner, osince = string.match(cur, '^(%S+) (%d+)$')
  if owner and owner ~= me and alive(owner) then
    if mode == 'new' then return {0, owner} end
    if mode == 'reclaim' then
      local o, s = tonumber(osince), tonumber(ARGV[2])
      if o < s or (o == s and owner < me) then return {0, owner} end
    end
    redis.call('SET', KEYS[1], me .. ' ' .. ARGV[2])
    return {1, owner}
  end
  if owner == me and mode ~= 'reclaim' then return {1, ''} end
end
redis.call('SET', KEYS[1], me .. ' ' .. ARGV[2])
return {1, ''}
"#;

/// KEYS[1] = name key; ARGV[1] = instance. Deletes the name if this instance holds it.
const LUA_RELEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// KEYS[1] = a room's members hash; ARGV = member, instance. Forgets the member if
/// this instance holds it (after a split, another may).
const LUA_HDEL_IF_OURS: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"#;

/// KEYS[1] = a key; ARGV[1] = a value. Deletes the key if it holds that value.
pub(super) const LUA_DEL_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS[1] = the guest counter; ARGV[1] = a number. Raises the counter to it (a Redis
/// back empty counts again from 0, under numbers the nodes still use).
pub(super) const LUA_AT_LEAST: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

/// KEYS[1] = name key; ARGV[1] = the frame. Publishes it to the node holding the name;
/// returns 0 if no live node does.
const LUA_ROUTE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local owner = string.match(cur, '^(%S+) ')
if not alive(owner) then return 0 end
redis.call('PUBLISH', 'loopchat:node:' .. owner, ARGV[1])
return 1
"#;

/// KEYS[1] = a room's members hash. Returns the names held by live nodes, and forgets
/// the others.
const LUA_WHO: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local out, seen = {}, {}
for i = 1, #all, 2 do
  local inst, name = string.match(all[i + 1], '^(%S+) (.+)$')
  local ok = false
  if inst then
    ok = seen[inst]
    if ok == nil then ok = alive(inst); seen[inst] = ok end
  end
  if ok then out[#out + 1] = name else redis.call('HDEL', KEYS[1], all[i]) end
end
return out
"#;

/// Returns room, count, room, count… over every live node, and forgets dead nodes.
const LUA_ROOMS: &str = r#"
local out = {}
for _, inst in ipairs(redis.call('SMEMBERS', 'loopchat:nodes')) do
  if alive(inst) then
    local h = redis.call('HGETALL', 'loopchat:rooms:' .. inst)
    for i = 1, #h do out[#out + 1] = h[i] end
  else
    redis.call('SREM', 'loopchat:nodes', inst)
    redis.call('DEL', 'loopchat:rooms:' .. inst)
  end
end
return out
"#;

/// The scripts, each with the `alive` function in front.
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) release: Script,
    pub(super) forget: Script,
    pub(super) route: Script,
    pub(super) who: Script,
    pub(super) rooms: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_alive = |body: &str| Script::new(&format!("{LUA_ALIVE}{body}"));
        Scripts {
            claim: with_alive(LUA_CLAIM),
            release: Script::new(LUA_RELEASE),
            forget: Script::new(LUA_HDEL_IF_OURS),
            route: with_alive(LUA_ROUTE),
            who: with_alive(LUA_WHO),
            rooms: with_alive(LUA_ROOMS),
        }
    }

    /// Loads every script (after each connect: a restarted Redis has none).
    pub(super) fn load(&self, con: &mut Connection) -> redis::RedisResult<()> {
        for s in [
            &self.claim,
            &self.release,
            &self.forget,
            &self.route,
            &self.who,
            &self.rooms,
        ] {
            s.load(con)?;
        }
        Ok(())
    }
}
