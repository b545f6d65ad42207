//! The Lua scripts behind every state transition, each one atomic step on one hash slot.
//!
//! Each script is the generated key prelude ([`Keys::lua_prelude`]), `lua/lib.lua`, then its own
//! body from `lua/<name>.lua`; the argument layout is documented at the top of each body. Every
//! script takes the queue's key prefix as `ARGV[1]`.

use std::sync::OnceLock;

use redis::Script;

use crate::keys::Keys;

/// All scripts, compiled once per process.
#[derive(Debug)]
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub finish: Script,
    pub retry: Script,
    pub promote: Script,
    pub renew: Script,
    pub cancel: Script,
    pub replay: Script,
    pub heartbeat: Script,
    pub log: Script,
    pub adopt: Script,
    pub repair: Script,
}

const LIB: &str = include_str!("../lua/lib.lua");

fn build(body: &str) -> Script {
    Script::new(&source(body))
}

/// Full source of a script, for `docs/` and for raw clients that want to `EVAL` it.
pub fn source(body: &str) -> String {
    format!("{}\n{LIB}\n{body}", Keys::lua_prelude())
}

/// Bodies by name, as shipped in `common/lua/`.
pub const BODIES: [(&str, &str); 12] = [
    ("enqueue", include_str!("../lua/enqueue.lua")),
    ("claim", include_str!("../lua/claim.lua")),
    ("finish", include_str!("../lua/finish.lua")),
    ("retry", include_str!("../lua/retry.lua")),
    ("promote", include_str!("../lua/promote.lua")),
    ("renew", include_str!("../lua/renew.lua")),
    ("cancel", include_str!("../lua/cancel.lua")),
    ("replay", include_str!("../lua/replay.lua")),
    ("heartbeat", include_str!("../lua/heartbeat.lua")),
    ("log", include_str!("../lua/log.lua")),
    ("adopt", include_str!("../lua/adopt.lua")),
    ("repair", include_str!("../lua/repair.lua")),
];

impl Scripts {
    /// The process-wide set.
    pub fn get() -> &'static Scripts {
        static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
        SCRIPTS.get_or_init(|| {
            let [enqueue, claim, finish, retry, promote, renew, cancel, replay, heartbeat, log, adopt, repair] =
                BODIES.map(|(_, body)| build(body));
            Scripts {
                enqueue,
                claim,
                finish,
                retry,
                promote,
                renew,
                cancel,
                replay,
                heartbeat,
                log,
                adopt,
                repair,
            }
        })
    }
}
