//! The Docker world: real programs in the runner images on the shared engine, each test in a
//! fleet and under a worker id of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::query_parameters::KillContainerOptions;
use quayside_common::config::{default_languages, LanguageConfig, RunnerConfig};
use quayside_common::{JobId, JobKind, Limits};
use quayside_e2e::sandboxes;
use quayside_e2e::within;
use quayside_worker::runner::docker::DockerRunner;
use quayside_worker::runner::{Fleet, Guarded, RunRequest, Runner};

use crate::suite::{Program, World};

/// The defaults with room for slow compilers on a busy machine.
const LIMITS: Limits = Limits {
    compile_wall_time_ms: 60_000,
    run_wall_time_ms: 10_000,
    ..Limits::DEFAULT
};

/// A language whose image is not on the engine.
const NOPE: &str = "nope";

pub struct Docker {
    runner: Guarded<DockerRunner>,
    languages: BTreeMap<String, LanguageConfig>,
    fleet: Fleet,
    engine: bollard::Docker,
}

impl Docker {
    /// The default config, under the OCI runtime named by `E2E_DOCKER_RUNTIME` if set.
    pub async fn new() -> Self {
        let mut cfg = RunnerConfig::default();
        if let Ok(runtime) = std::env::var("E2E_DOCKER_RUNTIME") {
            cfg.docker.runtime = runtime;
        }
        let mut languages = default_languages();
        let nope = LanguageConfig {
            image: "quayside/runner-nope:1".into(),
            ..languages["python"].clone()
        };
        languages.insert(NOPE.into(), nope);
        let unique = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let engine = within(10, "docker version", async {
            bollard::Docker::connect_with_local_defaults()
                .expect("docker client")
                .negotiate_version()
                .await
        })
        .await
        .expect("docker engine");
        Self {
            runner: Guarded::new(DockerRunner::new(cfg, &languages, format!("e2e-{unique}"))),
            languages,
            fleet: Fleet {
                queue: "e2e-runner-contract".into(),
                id: unique,
            },
            engine,
        }
    }

    /// The ids of the job's containers, running or not.
    async fn containers(&self, job: &JobId) -> Vec<String> {
        sandboxes::containers(&self.engine, &format!("quayside.job={job}")).await
    }
}

#[async_trait::async_trait]
impl World for Docker {
    fn runner(&self) -> &dyn Runner {
        &self.runner
    }

    fn request(&self, program: Program) -> RunRequest {
        let python = |source: String| ("python", "main.py", source);
        let (language, file, source) = match program {
            Program::Exits(code) => python(format!(
                "import sys\nprint('out')\nsys.stderr.write('err\\n')\nsys.exit({code})\n"
            )),
            Program::KillsItself => {
                python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n".into())
            }
            Program::BuildFails => ("c", "main.c", "int main(void) { oops }\n".into()),
            Program::RunsForever => {
                python("import time\nprint('working', flush=True)\ntime.sleep(600)\n".into())
            }
            Program::Prompts => python(
                "import time\nprint('Name? ', end='', flush=True)\ntime.sleep(600)\n".into(),
            ),
            Program::EatsMemory => ("c", "main.c", "#include <stdlib.h>\n#include <string.h>\nint main(void) { for (;;) { char *p = malloc(1 << 20); if (!p) return 9; memset(p, 1, 1 << 20); } }\n".into()),
            Program::Floods => python("print('0123456789' * 1000)\n".into()),
            Program::ImageMissing => (NOPE, "main.py", "print('never')\n".into()),
            Program::Measured(work) => ("c", "main.c", work.source().into()),
            Program::Tests => ("c", "main.c", crate::suite::TESTS_PROGRAM.into()),
        };
        let tests = (program == Program::Tests)
            .then(|| std::sync::Arc::new(crate::suite::tests_plan(&LIMITS)));
        RunRequest {
            job_id: JobId::generate(),
            attempt: 1,
            kind: JobKind::Run,
            language: language.to_owned(),
            language_config: self.languages[language].clone(),
            files: BTreeMap::from([(file.to_owned(), source)]),
            compiler_options: Vec::new(),
            args: Vec::new(),
            stdin: String::new(),
            limits: tests.as_ref().map_or(LIMITS, |p| p.sandbox_limits(&LIMITS)),
            fleet: self.fleet.clone(),
            tests,
        }
    }

    async fn play(&self, _: Program) {
        // The engine and the program play themselves.
    }

    async fn kill_from_outside(&self, job: &JobId) {
        let ids = self.containers(job).await;
        assert_eq!(ids.len(), 1, "one container for job {job}: {ids:?}");
        let kill = self
            .engine
            .kill_container(&ids[0], None::<KillContainerOptions>);
        within(10, "docker kill", kill).await.expect("docker kill");
    }

    async fn assert_gone(&self, job: &JobId) {
        // A dropped run removes its container from a guard's `Drop`, in the background.
        let gone = async {
            loop {
                if self.containers(job).await.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        within(60, &format!("containers of job {job} removed"), gone).await;
    }
}
