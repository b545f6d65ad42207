//! The checks every section's `validate` is made of. Each names the key it refuses, so an
//! operator reads which setting to fix, never only what was wrong.

use std::fmt::Display;

use super::ConfigError;

/// A refusal of `key`'s value, saying why.
pub(super) fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// `value` must not be zero.
pub(super) fn positive<T: PartialEq + Default>(
    key: &'static str,
    value: T,
) -> Result<(), ConfigError> {
    if value == T::default() {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// `value` must be `min` or more.
pub(super) fn at_least<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be at least {min}")));
    }
    Ok(())
}

/// `value` must be between `min` and `max`, both included.
pub(super) fn between<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("must be {min} to {max}")));
    }
    Ok(())
}

/// `addr` must be an `ip:port` socket address (no host names: a listener binds an address).
pub(super) fn socket_addr(key: &'static str, addr: &str) -> Result<(), ConfigError> {
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(key, format!("{addr:?} is not an ip:port address")));
    }
    Ok(())
}

/// One row of a section test's table: a change to the defaults, and the key it must make
/// `validate` refuse.
#[cfg(test)]
pub(super) type Refusal<T> = (fn(&mut T), &'static str);

/// Asserts that each change of a default section makes `validate` refuse exactly its key.
#[cfg(test)]
pub(super) fn assert_refusals<T: Default>(
    validate: impl Fn(&T) -> Result<(), ConfigError>,
    cases: &[Refusal<T>],
) {
    for (tweak, key) in cases {
        let mut section = T::default();
        tweak(&mut section);
        match validate(&section) {
            Err(ConfigError::Invalid { key: refused, .. }) => assert_eq!(refused, *key),
            other => panic!("{key}: expected a refusal, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(r: Result<(), ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key: "k", problem }) => problem,
            other => panic!("expected a refusal of k, got {other:?}"),
        }
    }

    #[test]
    fn each_check_refuses_only_what_it_names_and_says_the_bound() {
        positive("k", 1u64).expect("1");
        assert_eq!(problem(positive("k", 0usize)), "must be greater than 0");
        at_least("k", 300u64, 300).expect("the bound itself");
        assert_eq!(problem(at_least("k", 299u64, 300)), "must be at least 300");
        between("k", 1u64, 1, 3600).expect("low end");
        between("k", 3600u64, 1, 3600).expect("high end");
        assert_eq!(problem(between("k", 0u64, 1, 3600)), "must be 1 to 3600");
        assert_eq!(problem(between("k", 3601u64, 1, 3600)), "must be 1 to 3600");
        socket_addr("k", "127.0.0.1:0").expect("an address");
        assert_eq!(
            problem(socket_addr("k", "localhost:80")),
            "\"localhost:80\" is not an ip:port address"
        );
    }
}
