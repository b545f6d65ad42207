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

    /// Worker floors a job may not go below (`limits.min`): under these a sandbox cannot start
    /// (the engine refuses less than 6 MB of memory or 0.01 CPU; gVisor needs about 16 MiB to
    /// boot) or the wrapper cannot unpack the job's files, and the job would fail as an
    /// infrastructure error instead of getting a verdict of its own.
    pub const MIN: Limits = Limits {
        compile_wall_time_ms: 1_000,
        run_wall_time_ms: 100,
        cpu_millicores: 100,
        memory_bytes: 32 << 20,
        pids: 16,
        output_bytes: 1 << 10,
    };

    /// The lowest `limits.min` may be configured: the engines' own minima (Docker: 6 MB of
    /// memory, 0.01 CPU) and the processes the wrapper needs to unpack a job.
    pub const FLOOR: Limits = Limits {
        compile_wall_time_ms: 1,
        run_wall_time_ms: 1,
        cpu_millicores: 10,
        memory_bytes: 6 << 20,
        pids: 8,
        output_bytes: 1,
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

    /// Checks that every field lies within `min..=max`.
    ///
    /// # Errors
    /// Names the first offending field as `limits.<field>`.
    pub fn check_bounds(&self, min: &Limits, max: &Limits) -> Result<(), SpecError> {
        for (name, v) in self.fields() {
            check_field(name, v, min, max)?;
        }
        Ok(())
    }
}

/// One limit against its floor and its maximum, named `limits.<name>`.
pub(crate) fn check_field(name: &str, v: u64, min: &Limits, max: &Limits) -> Result<(), SpecError> {
    let floor = min.fields().into_iter().find(|(n, _)| *n == name);
    let ceiling = max.fields().into_iter().find(|(n, _)| *n == name);
    if let Some((_, m)) = floor.filter(|(_, m)| v < *m) {
        return Err(SpecError::field(
            format!("limits.{name}"),
            format!("{v} is below the configured minimum {m}"),
        ));
    }
    if let Some((_, m)) = ceiling.filter(|(_, m)| v > *m) {
        return Err(SpecError::field(
            format!("limits.{name}"),
            format!("{v} exceeds the configured maximum {m}"),
        ));
    }
    Ok(())
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
    /// The fields the job set, by name.
    fn set_fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("compile_wall_time_ms", self.compile_wall_time_ms),
            ("run_wall_time_ms", self.run_wall_time_ms),
            ("cpu_millicores", self.cpu_millicores),
            ("memory_bytes", self.memory_bytes),
            ("pids", self.pids),
            ("output_bytes", self.output_bytes),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
    }

    /// Checks the fields the job set against `min..=max`, without any defaults: what a client
    /// can check before it knows the workers' language table.
    ///
    /// # Errors
    /// A field below its floor or over its maximum, named as `limits.<field>`.
    pub fn check_set(&self, min: &Limits, max: &Limits) -> Result<(), SpecError> {
        for (name, v) in self.set_fields() {
            check_field(name, v, min, max)?;
        }
        Ok(())
    }

    /// Fills unset fields from `defaults` and refuses anything outside `min..=max`.
    ///
    /// # Errors
    /// A field below its floor or over its maximum, named as `limits.<field>`.
    pub fn resolve(
        &self,
        defaults: &Limits,
        min: &Limits,
        max: &Limits,
    ) -> Result<Limits, SpecError> {
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
        limits.check_bounds(min, max)?;
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's limits as a client sends them: only the fields in `set`.
    fn spec(set: serde_json::Value) -> LimitsSpec {
        serde_json::from_value(set).expect("limits")
    }

    /// `spec` resolved against the shipped defaults, floors and maxima.
    fn resolve(spec: &LimitsSpec) -> Result<Limits, SpecError> {
        spec.resolve(&Limits::DEFAULT, &Limits::MIN, &Limits::MAX)
    }

    /// The error names `limits.<name>` first and says `why`.
    fn assert_refused(err: &SpecError, name: &str, why: &str) {
        let text = err.to_string();
        assert!(text.starts_with(&format!("limits.{name}: ")), "{text}");
        assert!(text.contains(why), "{text}");
    }

    #[test]
    fn unset_fields_take_defaults() {
        let got = resolve(&spec(serde_json::json!({ "pids": 20 }))).expect("within maxima");
        assert_eq!(got.pids, 20);
        assert_eq!(got.memory_bytes, Limits::DEFAULT.memory_bytes);
    }

    #[test]
    fn over_maximum_names_the_field() {
        let over = serde_json::json!({ "memory_bytes": Limits::MAX.memory_bytes + 1 });
        let err = resolve(&spec(over)).expect_err("over max");
        assert_refused(&err, "memory_bytes", "exceeds the configured maximum");
    }

    #[test]
    fn zero_is_refused() {
        let err = resolve(&spec(serde_json::json!({ "run_wall_time_ms": 0 }))).expect_err("zero");
        assert!(
            err.to_string().starts_with("limits.run_wall_time_ms"),
            "{err}"
        );
    }

    #[test]
    fn defaults_fit_between_floors_and_maxima() {
        Limits::DEFAULT
            .check_bounds(&Limits::MIN, &Limits::MAX)
            .expect("shipped defaults must be valid");
        Limits::MIN
            .check_bounds(&Limits::FLOOR, &Limits::MAX)
            .expect("shipped floors must be above the engines' minima");
    }

    #[test]
    fn floors_refuse_what_no_sandbox_can_run_and_name_the_field() {
        for name in [
            "memory_bytes",
            "cpu_millicores",
            "pids",
            "output_bytes",
            "compile_wall_time_ms",
        ] {
            let one = spec(serde_json::json!({ name: 1 }));
            for err in [
                resolve(&one).expect_err(name),
                one.check_set(&Limits::MIN, &Limits::MAX).expect_err(name),
            ] {
                assert_refused(&err, name, "below the configured minimum");
            }
        }
        spec(serde_json::json!({ "memory_bytes": Limits::MIN.memory_bytes }))
            .check_set(&Limits::MIN, &Limits::MAX)
            .expect("exactly the floor is fine");
        LimitsSpec::default()
            .check_set(&Limits::MIN, &Limits::MAX)
            .expect("nothing set, nothing to refuse");
    }
}
