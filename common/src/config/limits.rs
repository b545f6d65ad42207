//! Settings of what a job may ask for (`limits.*`): default, floor and maximum of each resource
//! limit, and the caps on the size and shape of a spec. Producer, gateway and worker check a
//! spec against the same values (`admission`), so a job that could only fail as an
//! infrastructure error is refused at the door instead, naming its field.

use serde::{Deserialize, Serialize};

use super::check::{invalid, positive};
use super::ConfigError;
use crate::limits::Limits;

/// Longest path the kernel takes (`PATH_MAX`): `limits.max_path_bytes` may not go above it.
pub const PATH_MAX: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Applied to fields a job leaves unset.
    pub default: Limits,
    /// A job asking for less is rejected: below these a sandbox cannot start or unpack a job
    /// (never below [`Limits::FLOOR`], the engines' own minima).
    pub min: Limits,
    /// A job asking for more is rejected.
    pub max: Limits,
    /// Total bytes of all source files (names included).
    pub max_source_bytes: u64,
    pub max_files: u64,
    pub max_stdin_bytes: u64,
    /// Arguments passed to the program (`args`), and their total bytes.
    pub max_args: u64,
    pub max_args_bytes: u64,
    /// Options passed to the compiler (`compiler_options`), and their total bytes. They are
    /// quoted into the wrapper script, which the kernel takes as one argument of at most
    /// 128 KiB, so keep this small.
    pub max_compiler_options: u64,
    pub max_compiler_options_bytes: u64,
    /// Longest file path, in bytes.
    pub max_path_bytes: u64,
    /// Most folders a file may sit in (`a.c` is 0 deep, `src/lib/a.c` 2): bounds the archive
    /// built from the files, whose size grows with every folder.
    pub max_folder_depth: u64,
    /// Labels per job, and bytes per label (name and value together).
    pub max_labels: u64,
    pub max_label_bytes: u64,
    /// Total bytes of all the spec's text: file names and contents, stdin, args, compiler
    /// options, labels, ids. Bounds what one job writes to Redis and to the engine.
    pub max_spec_bytes: u64,
    /// Test cases per job (`tests`).
    pub max_tests: u64,
    /// Bytes of each test's stdout and stderr kept in the result (its `output_bytes` still
    /// decides `output_exceeded`): 1,000 tests must not make a gigabyte result.
    pub test_output_kept_bytes: u64,
    /// Bytes of all tests' kept output in one result; later tests keep none (`truncated`).
    pub max_result_output_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default: Limits::DEFAULT,
            min: Limits::MIN,
            max: Limits::MAX,
            max_source_bytes: 1 << 20,
            max_files: 256,
            max_stdin_bytes: 1 << 20,
            max_args: 256,
            max_args_bytes: 64 << 10,
            max_compiler_options: 64,
            max_compiler_options_bytes: 4 << 10,
            max_path_bytes: 255,
            max_folder_depth: 16,
            max_labels: 64,
            max_label_bytes: 1 << 10,
            max_spec_bytes: 4 << 20,
            max_tests: 1_000,
            test_output_kept_bytes: 4 << 10,
            max_result_output_bytes: 8 << 20,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.min
            .check_bounds(&Limits::FLOOR, &self.max)
            .map_err(|e| invalid("limits.min", format!("{e} (the floor of limits.min)")))?;
        self.default
            .check_bounds(&self.min, &self.max)
            .map_err(|e| invalid("limits.default", e.to_string()))?;
        positive("limits.max_files", self.max_files)?;
        positive("limits.max_source_bytes", self.max_source_bytes)?;
        positive("limits.max_path_bytes", self.max_path_bytes)?;
        positive("limits.max_spec_bytes", self.max_spec_bytes)?;
        positive("limits.max_tests", self.max_tests)?;
        if self.max_path_bytes > PATH_MAX {
            return Err(invalid(
                "limits.max_path_bytes",
                format!("must be at most {PATH_MAX} (the kernel's PATH_MAX)"),
            ));
        }
        let largest_job = self.max_source_bytes + self.max_stdin_bytes;
        if self.max_spec_bytes < largest_job {
            return Err(invalid(
                "limits.max_spec_bytes",
                format!(
                    "{} is below limits.max_source_bytes + limits.max_stdin_bytes ({largest_job})",
                    self.max_spec_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::assert_refusals;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        LimitsConfig::default().validate().expect("defaults");
        assert_refusals(
            LimitsConfig::validate,
            &[
                (|c| c.min.memory_bytes = 1 << 20, "limits.min"),
                (|c| c.min.cpu_millicores = 1, "limits.min"),
                (|c| c.default.pids = 2, "limits.default"),
                (|c| c.max_path_bytes = 5000, "limits.max_path_bytes"),
                (|c| c.max_spec_bytes = 1 << 20, "limits.max_spec_bytes"),
                (|c| c.max_files = 0, "limits.max_files"),
                (|c| c.max_tests = 0, "limits.max_tests"),
            ],
        );
        let mut c = LimitsConfig::default();
        c.min.memory_bytes = 6 << 20;
        c.validate()
            .expect("the engine's own minimum is a valid floor");
    }
}
