use super::*;

const FLOAT: Compare = Compare::Float {
    abs: 1e-6,
    rel: 1e-6,
};

fn ok(mode: Compare, expected: &str, actual: &str) -> bool {
    judge(mode, expected.as_bytes(), actual.as_bytes()).is_ok()
}

#[test]
fn exact_is_byte_for_byte() {
    assert!(ok(Compare::Exact, "3\n", "3\n"));
    for wrong in ["3", "3\n\n", "3 \n", "4\n", ""] {
        assert!(!ok(Compare::Exact, "3\n", wrong), "{wrong:?}");
    }
    assert_eq!(
        judge(Compare::Exact, b"abc", b"abd"),
        Err(Mismatch::Byte { offset: 2 })
    );
    assert_eq!(
        judge(Compare::Exact, b"abc", b"ab"),
        Err(Mismatch::Byte { offset: 2 })
    );
    assert!(
        judge(Compare::Exact, &[0xff, 0], &[0xff, 0]).is_ok(),
        "non-UTF-8 output"
    );
}

#[test]
fn lines_ignore_trailing_whitespace_and_trailing_blank_lines_only() {
    for same in [
        "1 2\n3\n",
        "1 2\n3",
        "1 2   \n3\t\n",
        "1 2\r\n3\r\n",
        "1 2\n3\n\n\n  \n",
    ] {
        assert!(ok(Compare::Lines, "1 2\n3\n", same), "{same:?}");
    }
    for different in [
        "1  2\n3\n",
        " 1 2\n3\n",
        "1 2\n\n3\n",
        "1 2\n",
        "1 2\n3\n4\n",
        "12\n3\n",
    ] {
        assert!(!ok(Compare::Lines, "1 2\n3\n", different), "{different:?}");
    }
    assert!(ok(Compare::Lines, "", "\n\n"), "blank output is empty");
    assert_eq!(
        judge(Compare::Lines, b"a\nb\nc\n", b"a\nx\nc\n"),
        Err(Mismatch::Line {
            line: 2,
            expected: Some("b".into()),
            found: Some("x".into())
        })
    );
    assert_eq!(
        judge(Compare::Lines, b"a\nb\n", b"a\n"),
        Err(Mismatch::Line {
            line: 2,
            expected: Some("b".into()),
            found: None
        })
    );
}

#[test]
fn tokens_ignore_all_whitespace_layout() {
    for same in ["1 2 3", "1\n2\n3\n", "  1\t2 \r\n 3  "] {
        assert!(ok(Compare::Tokens, "1 2 3\n", same), "{same:?}");
    }
    for different in ["1 2", "1 2 3 4", "1 23", "1 2 3.0"] {
        assert!(!ok(Compare::Tokens, "1 2 3\n", different), "{different:?}");
    }
    assert_eq!(
        judge(Compare::Tokens, b"1 2 3", b"1 2"),
        Err(Mismatch::Token {
            token: 3,
            expected: Some("3".into()),
            found: None
        })
    );
}

#[test]
fn floats_match_within_either_tolerance() {
    assert!(ok(FLOAT, "0.333333", "0.3333334"), "abs");
    assert!(ok(FLOAT, "1000000", "1000000.5"), "rel: 1e6 * 1e-6 = 1");
    assert!(
        ok(FLOAT, "1e3 x", "1000.0000001 x"),
        "other notation, words equal"
    );
    assert!(ok(FLOAT, "YES 2.5", "YES\n2.5000000"), "layout as tokens");
    assert!(!ok(FLOAT, "0.5", "0.5001"));
    assert!(!ok(FLOAT, "1000000", "1000002"));
    assert!(!ok(FLOAT, "YES", "yes"), "words are compared exactly");
    assert!(!ok(FLOAT, "1", "inf"), "infinity is not close to anything");
    assert!(!ok(FLOAT, "nan", "1"));
    assert!(ok(FLOAT, "nan", "nan"), "equal tokens are equal");
    assert!(!ok(FLOAT, "1 2", "1"), "a missing number");
    let zero = Compare::Float { abs: 0.0, rel: 0.0 };
    assert!(ok(zero, "0.5", "5e-1"), "same value, other spelling");
    assert!(!ok(zero, "0.5", "0.50000001"));
}

#[test]
fn mismatches_are_escaped_and_short() {
    let long = format!("\x1b[31m{}", "y".repeat(100));
    let m = judge(Compare::Lines, b"x\n", long.as_bytes()).expect_err("differs");
    let text = m.to_string();
    assert!(!text.contains('\x1b'), "raw escape in {text:?}");
    assert!(text.contains("\\u{1b}") && text.ends_with('…'), "{text}");
    assert!(text.len() < 120, "{text}");
    assert_eq!(
        judge(Compare::Tokens, b"1", b"")
            .expect_err("empty")
            .to_string(),
        "token 1 differs: expected \"1\", found end of output"
    );
}
