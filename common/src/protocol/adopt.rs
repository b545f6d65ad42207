//! `adopt.lua`: give a record to the jobs raw producers added with a plain `XADD`.

use redis::Value;

use super::reply::Reader;
use super::{Args, Call, ReplyError};
use crate::keys::Keys;
use crate::scripts::ScriptName;

/// The adopt script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Adopt {
    /// At most this many entries read per stream.
    pub limit: u64,
}

/// What one call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// Records made.
    pub made: u64,
    /// Entries read; below 3 × limit means caught up.
    pub read: u64,
}

impl Adopt {
    pub fn call(&self, keys: &Keys) -> Call<Adopted> {
        let args = Args::new(keys).arg(self.limit);
        Call::new(ScriptName::Adopt, vec![keys.adopted()], args, parse)
    }
}

const R: Reader = Reader("adopt");

fn parse(reply: Value) -> Result<Adopted, ReplyError> {
    let [made, read] = R.parts(reply)?;
    Ok(Adopted {
        made: R.number(&made)?,
        read: R.number(&read)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{check, keys};

    #[test]
    fn made_and_read_come_back() {
        let call = Adopt { limit: 1000 }.call(&keys());
        let answer = Value::Array(vec![Value::Int(2), Value::Int(5)]);
        let read = Adopted { made: 2, read: 5 };
        let half = Value::Array(vec![Value::Int(2)]);
        check(&call, &["qs:{q}:", "1000"], (answer, read), half);
    }
}
