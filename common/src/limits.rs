//! Resource limits: what a job asks for ([`LimitsSpec`]) and what it gets ([`Limits`]).

use serde::{Deserialize, Serialize};

use crate::job::SpecError;

/// Limits a job runs under, every field set. Worker config holds two of these: defaults and maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall time for the build step.
    pub compile_wall_time_ms: u64,
    /// Wall time for the program itself.
    pub run_wall_time_ms: u64,
    /// CPU share in thousandths of a core (1000 = one core).
    pub cpu_millicores: u64,
    /// Memory, swap included (swap is never granted beyond memory).
    pub memory_bytes: u64,
    /// Processes and threads alive at once.
    pub pids: u64,
    /// Bytes kept per output stream (stdout, stderr, compiler output); past it the job is stopped.
    pub output_bytes: u64,
}

impl Limits {
    /// Worker defaults when a job sets nothing.
    pub const DEFAULT: Limits = Limits {
        compile_wall_time_ms: 30_000,
        run_wall_time_ms: 10_000,
        cpu_millicores: 1_000,
        memory_bytes: 256 << 20,
        pids: 64,
        output_bytes: 1 << 20,
    };

    /// Worker maxima a job may ask for.
    pub const MAX: Limits = Limits {
        compile_wall_time_ms: 120_000,
        run_wall_time_ms: 60_000,
        cpu_millicores: 2_000,
        memory_bytes: 2 << 30,
        pids: 256,
        output_bytes: 16 << 20,
    };

    fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("compile_wall_time_ms", self.compile_wall_time_ms),
            ("run_wall_time_ms", self.run_wall_time_ms),
            ("cpu_millicores", self.cpu_millicores),
            ("memory_bytes", self.memory_bytes),
            ("pids", self.pids),
            ("output_bytes", self.output_bytes),
        ]
    }

    /// Checks that no field is zero and none exceeds `max`.
    ///
    /// # Errors
    /// Names the first offending field as `limits.<field>`.
    pub fn check_within(&self, max: &Limits) -> Result<(), SpecError> {
        for ((name, v), (_, m)) in self.fields().into_iter().zip(max.fields()) {
            if v == 0 {
                return Err(SpecError::field(
                    format!("limits.{name}"),
                    "must be greater than 0",
                ));
            }
            if v > m {
                return Err(SpecError::field(
                    format!("limits.{name}"),
                    format!("{v} exceeds the configured maximum {m}"),
                ));
            }
        }
        Ok(())
    }
}

/// Limits as a job states them: any field may be left to the worker's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_wall_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_wall_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl LimitsSpec {
    /// Fills unset fields from `defaults` and refuses anything over `max`.
    ///
    /// # Errors
    /// A field that is zero or over its maximum, named as `limits.<field>`.
    pub fn resolve(&self, defaults: &Limits, max: &Limits) -> Result<Limits, SpecError> {
        let limits = Limits {
            compile_wall_time_ms: self
                .compile_wall_time_ms
                .unwrap_or(defaults.compile_wall_time_ms),
            run_wall_time_ms: self.run_wall_time_ms.unwrap_or(defaults.run_wall_time_ms),
            cpu_millicores: self.cpu_millicores.unwrap_or(defaults.cpu_millicores),
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
            pids: self.pids.unwrap_or(defaults.pids),
            output_bytes: self.output_bytes.unwrap_or(defaults.output_bytes),
        };
        limits.check_within(max)?;
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_defaults() {
        let got = LimitsSpec {
            pids: Some(10),
            ..Default::default()
        }
        .resolve(&Limits::DEFAULT, &Limits::MAX)
        .expect("within maxima");
        assert_eq!(got.pids, 10);
        assert_eq!(got.memory_bytes, Limits::DEFAULT.memory_bytes);
    }

    #[test]
    fn over_maximum_names_the_field() {
        let err = LimitsSpec {
            memory_bytes: Some(Limits::MAX.memory_bytes + 1),
            ..Default::default()
        }
        .resolve(&Limits::DEFAULT, &Limits::MAX)
        .expect_err("over max");
        assert!(
            err.to_string().starts_with("limits.memory_bytes: "),
            "{err}"
        );
        assert!(
            err.to_string().contains("exceeds the configured maximum"),
            "{err}"
        );
    }

    #[test]
    fn zero_is_refused() {
        let err = LimitsSpec {
            run_wall_time_ms: Some(0),
            ..Default::default()
        }
        .resolve(&Limits::DEFAULT, &Limits::MAX)
        .expect_err("zero");
        assert!(
            err.to_string().starts_with("limits.run_wall_time_ms"),
            "{err}"
        );
    }

    #[test]
    fn defaults_fit_within_maxima() {
        Limits::DEFAULT
            .check_within(&Limits::MAX)
            .expect("shipped defaults must be valid");
    }
}
