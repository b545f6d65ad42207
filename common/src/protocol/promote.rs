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
    use crate::protocol::testing::{keys, text};

    #[test]
    fn the_limit_goes_and_a_count_comes_back() {
        let call = Promote { limit: 1000 }.call(&keys());
        assert_eq!(text(&call), ["qs:{q}:", "1000"]);
        assert_eq!(call.parse(Value::Int(3)), Ok(3));
        assert!(call.parse(Value::Array(vec![])).is_err());
    }
}
