//! `promote.lua`: move due retries from the delayed set back to their streams.

use super::{Args, Call};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// The promote script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Promote {
    /// At most this many ids per call.
    pub limit: usize,
}

impl Promote {
    /// How many ids were taken from the delayed set.
    pub fn call(&self, keys: &Keys) -> Call<u64> {
        let args = Args::new(keys).arg(self.limit);
        Call::count(ScriptName::Promote, vec![keys.delayed()], args)
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::protocol::testing::{check, keys};

    #[test]
    fn the_limit_goes_and_a_count_comes_back() {
        let call = Promote { limit: 1000 }.call(&keys());
        let empty = Value::Array(vec![]);
        check(&call, &["qs:{q}:", "1000"], (Value::Int(3), 3), empty);
    }
}
