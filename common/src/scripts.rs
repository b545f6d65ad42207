//! The Lua scripts behind every state transition, each one atomic step on one hash slot.
//!
//! Each script is the generated key prelude ([`Keys::lua_prelude`]), `lua/lib.lua`, then its own
//! body from `lua/<name>.lua`; the argument layout is documented at the top of each body. Every
//! script takes the queue's key prefix as `ARGV[1]`. Callers go through the typed calls of
//! [`crate::protocol`].

use std::sync::OnceLock;

use redis::Script;

use crate::keys::Keys;

/// One script of `common/lua/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptName {
    Enqueue,
    Claim,
    Finish,
    Retry,
    Promote,
    Renew,
    Cancel,
    Replay,
    Heartbeat,
    Log,
    Adopt,
    Repair,
    Webhook,
}

impl ScriptName {
    /// In the order of [`BODIES`].
    pub const ALL: [ScriptName; 13] = [
        Self::Enqueue,
        Self::Claim,
        Self::Finish,
        Self::Retry,
        Self::Promote,
        Self::Renew,
        Self::Cancel,
        Self::Replay,
        Self::Heartbeat,
        Self::Log,
        Self::Adopt,
        Self::Repair,
        Self::Webhook,
    ];

    /// The file name without `.lua`.
    pub fn as_str(self) -> &'static str {
        BODIES[self as usize].0
    }
}

const LIB: &str = include_str!("../lua/lib.lua");

/// Full source of a script, for `docs/` and for raw clients that want to `EVAL` it.
pub fn source(body: &str) -> String {
    format!("{}\n{LIB}\n{body}", Keys::lua_prelude())
}

/// `(name, body of lua/<name>.lua)` for each name.
macro_rules! bodies {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../lua/", $name, ".lua")))),*]
    };
}

/// Bodies by name, as shipped in `common/lua/`.
pub const BODIES: [(&str, &str); 13] = bodies![
    "enqueue",
    "claim",
    "finish",
    "retry",
    "promote",
    "renew",
    "cancel",
    "replay",
    "heartbeat",
    "log",
    "adopt",
    "repair",
    "webhook",
];

/// The script, compiled once per process.
pub fn get(name: ScriptName) -> &'static Script {
    static SCRIPTS: OnceLock<[Script; 13]> = OnceLock::new();
    &SCRIPTS.get_or_init(|| BODIES.map(|(_, body)| Script::new(&source(body))))[name as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_bodies() {
        for (i, name) in ScriptName::ALL.into_iter().enumerate() {
            assert_eq!(name as usize, i);
            assert_eq!(
                format!("{name:?}").to_lowercase(),
                name.as_str(),
                "{name:?} is lua/{}.lua",
                name.as_str()
            );
        }
    }

    #[test]
    fn every_script_gets_the_prelude_and_the_library() {
        let claim = get(ScriptName::Claim);
        let again = get(ScriptName::Claim);
        assert!(std::ptr::eq(claim, again), "compiled once");
        let src = source(BODIES[1].1);
        assert!(src.starts_with("local P = ARGV[1]"), "{src}");
        assert!(src.contains("local function holds("));
    }
}
