//! The compare modes of a job's tests ([`Compare`]): whether a test's stdout matches its
//! `expected_stdout`, and where it first differs. Pure functions on bytes, so the worker judges
//! outside the sandbox and a program's output, UTF-8 or not, is compared exactly as it was kept.

use std::fmt;

use crate::cases::Compare;

/// Longest excerpt of a line or token quoted in a [`Mismatch`].
const EXCERPT_CHARS: usize = 40;

/// Where the output first differs from the expected one, for `checker_message`: escaped, so a
/// program's bytes never reach a terminal raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// `exact`: the first differing byte offset.
    Byte { offset: usize },
    /// `lines`: 1-based line number and both lines (`None` past the end).
    Line {
        line: usize,
        expected: Option<String>,
        found: Option<String>,
    },
    /// `tokens` and `float`: 1-based token number and both tokens (`None` past the end).
    Token {
        token: usize,
        expected: Option<String>,
        found: Option<String>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: &Option<String>| s.as_deref().map_or("end of output".into(), quote);
        match self {
            Self::Byte { offset } => write!(f, "output differs from byte {offset}"),
            Self::Line {
                line,
                expected,
                found,
            } => write!(
                f,
                "line {line} differs: expected {}, found {}",
                side(expected),
                side(found)
            ),
            Self::Token {
                token,
                expected,
                found,
            } => write!(
                f,
                "token {token} differs: expected {}, found {}",
                side(expected),
                side(found)
            ),
        }
    }
}

/// `s` shortened to [`EXCERPT_CHARS`] and quoted with control characters escaped.
fn quote(s: &str) -> String {
    let short: String = s.chars().take(EXCERPT_CHARS).collect();
    let more = if s.chars().nth(EXCERPT_CHARS).is_some() {
        "…"
    } else {
        ""
    };
    format!("{short:?}{more}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Judges `actual` against `expected` under `mode`.
///
/// # Errors
/// Where they first differ.
pub fn judge(mode: Compare, expected: &[u8], actual: &[u8]) -> Result<(), Mismatch> {
    match mode {
        Compare::Exact => match expected.iter().zip(actual).position(|(e, a)| e != a) {
            Some(offset) => Err(Mismatch::Byte { offset }),
            None if expected.len() != actual.len() => Err(Mismatch::Byte {
                offset: expected.len().min(actual.len()),
            }),
            None => Ok(()),
        },
        Compare::Lines => {
            let (e, a) = (lines(expected), lines(actual));
            first_difference(&e, &a, |x, y| x == y).map_or(Ok(()), |i| {
                Err(Mismatch::Line {
                    line: i + 1,
                    expected: e.get(i).map(|l| text(l)),
                    found: a.get(i).map(|l| text(l)),
                })
            })
        }
        Compare::Tokens => tokens_differ(expected, actual, |x, y| x == y),
        Compare::Float { abs, rel } => {
            tokens_differ(expected, actual, |e, a| e == a || close(e, a, abs, rel))
        }
    }
}

/// Lines without their trailing whitespace, trailing blank lines dropped.
fn lines(out: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = out.split(|b| *b == b'\n').map(trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn tokens(out: &[u8]) -> Vec<&[u8]> {
    out.split(u8::is_ascii_whitespace)
        .filter(|t| !t.is_empty())
        .collect()
}

fn tokens_differ(
    expected: &[u8],
    actual: &[u8],
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<(), Mismatch> {
    let (e, a) = (tokens(expected), tokens(actual));
    first_difference(&e, &a, same).map_or(Ok(()), |i| {
        Err(Mismatch::Token {
            token: i + 1,
            expected: e.get(i).map(|t| text(t)),
            found: a.get(i).map(|t| text(t)),
        })
    })
}

/// Index of the first pair that is not `same`, or of the end of the shorter list.
fn first_difference(
    e: &[&[u8]],
    a: &[&[u8]],
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<usize> {
    e.iter()
        .zip(a)
        .position(|(x, y)| !same(x, y))
        .or((e.len() != a.len()).then(|| e.len().min(a.len())))
}

/// Two tokens that both read as finite numbers, within `abs` of each other or within `rel` of
/// the expected one.
fn close(expected: &[u8], actual: &[u8], abs: f64, rel: f64) -> bool {
    let number = |t: &[u8]| {
        std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    match (number(expected), number(actual)) {
        (Some(e), Some(a)) => {
            let diff = (e - a).abs();
            diff <= abs || diff <= rel * e.abs()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
