//! Job-controlled text on a terminal. Every human output of the CLI that carries text a job,
//! a batch manifest or Redis could hold (output, names, labels, errors, dead letters, worker
//! fields) goes through [`text`] or [`line`], so none of it can retitle the window, write the
//! clipboard (OSC 52), clear the screen or move the cursor over what the CLI printed. Control
//! characters are shown as escapes instead. `--json` output ([`json`]) and Redis keep the
//! bytes exact: JSON already escapes C0, and [`json`] escapes DEL and C1 as well, so the
//! decoded values are unchanged and the raw output is safe on a terminal too.

use std::borrow::Cow;

/// `s` with every control character shown as an escape (`\x1b`, `\r`, `\u{9b}`): C0 controls
/// except newline and tab (the text's own layout), DEL, C1 controls, and the bidirectional
/// overrides and isolates, which reorder what a terminal shows.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| matches!(c, '\n' | '\t'))
}

/// Like [`text`], for a field shown within one line (a name, an error, a label): newline and
/// tab are escaped too.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// Output bytes (a log entry, a stream of a result): decoded as UTF-8 (invalid sequences
/// become U+FFFD, so no stray C1 byte survives), then escaped like [`text`].
pub fn bytes(b: &[u8]) -> String {
    text(&String::from_utf8_lossy(b)).into_owned()
}

/// `value` as one line of JSON with DEL, C1 controls and bidi overrides escaped (`\u009b`),
/// which JSON allows but does not require: a terminal would obey them. They can only stand
/// inside strings, so the escaped document decodes to exactly the same values.
///
/// # Errors
/// `value` cannot be serialized.
pub fn json(value: &impl serde::Serialize) -> serde_json::Result<String> {
    let raw = serde_json::to_string(value)?;
    if !raw.chars().any(unsafe_char) {
        return Ok(raw);
    }
    Ok(raw
        .chars()
        .map(|c| match c {
            c if unsafe_char(c) => format!("\\u{:04x}", u32::from(c)),
            c => c.to_string(),
        })
        .collect())
}

fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, layout: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c) && !layout(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if !unsafe_char(c) || layout(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x80 => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_shown_not_obeyed() {
        let hostile = "title\u{1b}]0;pwned\u{7}clip\u{1b}]52;c;aGk=\u{1b}\\clear\u{1b}[2J\rover\u{9b}31m\u{7f}\u{202e}txt";
        let shown = text(hostile);
        assert_eq!(
            shown,
            "title\\x1b]0;pwned\\x07clip\\x1b]52;c;aGk=\\x1b\\clear\\x1b[2J\\rover\\u{9b}31m\\x7f\\u{202e}txt"
        );
        assert!(!shown.chars().any(unsafe_char));
    }

    #[test]
    fn layout_is_kept_in_text_and_escaped_in_a_line() {
        assert!(matches!(text("a\n\tb"), Cow::Borrowed("a\n\tb")));
        assert_eq!(line("a\n\tb"), "a\\n\\tb");
        assert!(matches!(line("plain: ünïcode ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_escapes_what_a_terminal_would_obey_and_decodes_to_the_same_value() {
        let value = serde_json::json!({ "data": "a\u{1b}]0;x\u{7}\u{9b}2J\u{7f}\u{202e}\n" });
        let shown = json(&value).expect("json");
        assert_eq!(
            shown,
            r#"{"data":"a\u001b]0;x\u0007\u009b2J\u007f\u202e\n"}"#
        );
        let back: serde_json::Value = serde_json::from_str(&shown).expect("valid JSON");
        assert_eq!(back, value, "bytes exact once decoded");
    }

    #[test]
    fn raw_c1_bytes_cannot_survive_decoding() {
        let shown = bytes(b"a\x9b2Jb\x1b");
        assert_eq!(shown, "a\u{fffd}2Jb\\x1b");
    }
}
