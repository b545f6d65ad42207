//! Reading script replies. Lua values arrive as Redis values: a string as a bulk string, a
//! number as an integer, `false` or `nil` as nil, a table as an array. Every helper names the
//! script in its error, and refuses what the script never answers.

use redis::Value;

use super::ReplyError;
use crate::job::Priority;

/// Reads the reply of one script.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reader(pub &'static str);

impl Reader {
    pub fn error(self, detail: impl Into<String>) -> ReplyError {
        ReplyError {
            script: self.0,
            detail: detail.into(),
        }
    }

    /// An array; nil (a Lua table that was empty or `false`) reads as empty.
    pub fn array(self, v: &Value) -> Result<&[Value], ReplyError> {
        match v {
            Value::Array(a) => Ok(a),
            Value::Nil => Ok(&[]),
            other => Err(self.error(format!("expected an array, got {other:?}"))),
        }
    }

    /// An array of `n` values, owned.
    pub fn parts<const N: usize>(self, v: Value) -> Result<[Value; N], ReplyError> {
        match v {
            Value::Array(a) => {
                let len = a.len();
                a.try_into()
                    .map_err(|_| self.error(format!("expected {N} parts, got {len}")))
            }
            other => Err(self.error(format!("expected {N} parts, got {other:?}"))),
        }
    }

    /// A flat array in records of `n` values.
    pub fn records(
        self,
        v: &Value,
        n: usize,
    ) -> Result<std::slice::ChunksExact<'_, Value>, ReplyError> {
        let a = self.array(v)?;
        if a.len() % n != 0 {
            return Err(self.error(format!(
                "expected records of {n} values, got {} values",
                a.len()
            )));
        }
        Ok(a.chunks_exact(n))
    }

    /// A string's bytes (nil: empty).
    pub fn bytes(self, v: Value) -> Result<Vec<u8>, ReplyError> {
        match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            Value::Int(i) => Ok(i.to_string().into_bytes()),
            Value::Nil => Ok(Vec::new()),
            other => Err(self.error(format!("expected a string, got {other:?}"))),
        }
    }

    /// A string (nil: empty); bytes that are not UTF-8 are replaced.
    pub fn text(self, v: &Value) -> Result<String, ReplyError> {
        match v {
            Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            Value::Nil => Ok(String::new()),
            other => Err(self.error(format!("expected a string, got {other:?}"))),
        }
    }

    /// A number, given as an integer or as its decimal text.
    pub fn number<T: std::str::FromStr>(self, v: &Value) -> Result<T, ReplyError> {
        let parsed = match v {
            Value::Int(i) => i.to_string().parse().ok(),
            Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
            Value::SimpleString(s) => s.parse().ok(),
            _ => None,
        };
        parsed.ok_or_else(|| self.error(format!("expected a number, got {v:?}")))
    }

    /// A stream index (1 to 3) as the priority it stands for.
    pub fn priority(self, v: &Value) -> Result<Priority, ReplyError> {
        let i: usize = self.number(v)?;
        i.checked_sub(1)
            .and_then(Priority::from_index)
            .ok_or_else(|| self.error(format!("stream index {i} out of range")))
    }

    /// One answer per item of a call made for `expected` items.
    pub fn answers(self, v: &Value, expected: usize) -> Result<&[Value], ReplyError> {
        let a = self.array(v)?;
        if a.len() != expected {
            return Err(self.error(format!("{} answers for {expected} items", a.len())));
        }
        Ok(a)
    }

    /// A fenced write's answer: 1 taken, 0 fenced.
    pub fn write(self, v: &Value) -> Result<super::Write, ReplyError> {
        match v {
            Value::Int(1) => Ok(super::Write::Taken),
            Value::Int(0) => Ok(super::Write::Fenced),
            other => Err(self.error(format!("expected 1 or 0, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::bulk;
    use crate::protocol::Write;

    const R: Reader = Reader("test");

    #[test]
    fn numbers_come_as_integers_or_text() {
        assert_eq!(R.number::<u64>(&Value::Int(7)), Ok(7));
        assert_eq!(R.number::<u64>(&bulk("12")), Ok(12));
        assert!(R.number::<u64>(&bulk("x")).is_err());
        assert!(
            R.number::<u64>(&Value::Int(-1)).is_err(),
            "no negative counts"
        );
        assert!(R.number::<u64>(&Value::Nil).is_err());
    }

    #[test]
    fn priorities_are_stream_indices() {
        assert_eq!(R.priority(&bulk("1")), Ok(Priority::High));
        assert_eq!(R.priority(&Value::Int(3)), Ok(Priority::Low));
        for bad in ["0", "4"] {
            let e = R.priority(&bulk(bad)).expect_err(bad);
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn records_must_be_whole() {
        let v = Value::Array(vec![bulk("a"), bulk("b"), bulk("c")]);
        assert_eq!(R.records(&v, 3).expect("one record").count(), 1);
        let e = R.records(&v, 2).expect_err("half a record");
        assert_eq!(
            e.to_string(),
            "unexpected reply to test: expected records of 2 values, got 3 values"
        );
    }

    #[test]
    fn write_answers_are_one_or_zero() {
        assert_eq!(R.write(&Value::Int(1)), Ok(Write::Taken));
        assert_eq!(R.write(&Value::Int(0)), Ok(Write::Fenced));
        assert!(R.write(&Value::Int(2)).is_err());
        assert!(R.write(&bulk("1")).is_err());
    }

    #[test]
    fn parts_are_counted() {
        let v = Value::Array(vec![Value::Int(1), Value::Int(2)]);
        assert!(R.parts::<2>(v.clone()).is_ok());
        assert!(R.parts::<3>(v).is_err());
        assert!(R.parts::<1>(Value::Int(1)).is_err());
    }
}
