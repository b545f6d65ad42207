//! Loading as a whole: precedence (defaults < file < environment, under `figment::Jail`),
//! errors naming their key, what spans sections.

#![allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]

use std::path::Path;
use std::time::Duration;

use figment::Jail;

use super::*;

#[test]
fn defaults_are_valid() {
    Jail::expect_with(|_| {
        let c = Config::load(None).expect("defaults load");
        assert_eq!(c.worker.slots, 4);
        assert!(c.languages.contains_key("c"));
        Ok(())
    });
}

#[test]
fn env_overrides_file_overrides_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "q.toml",
            "[worker]\nslots = 7\nlease_ms = 9000\n[queue]\nname = \"builds\"\n",
        )?;
        jail.set_env("QUAYSIDE_WORKER__SLOTS", "9");
        let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
        assert_eq!(c.worker.slots, 9, "env wins over file");
        assert_eq!(c.worker.lease_ms, 9000, "file wins over default");
        assert_eq!(c.queue.name, "builds");
        assert_eq!(c.worker.claim_block_ms, 5000, "default kept");
        Ok(())
    });
}

#[test]
fn errors_name_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file("bad.toml", "[worker]\nslotz = 3\n")?;
        let e = Config::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
        assert!(e.to_string().contains("slotz"), "{e}");

        jail.create_file("zero.toml", "[worker]\nslots = 0\n")?;
        let e = Config::load(Some(Path::new("zero.toml"))).expect_err("zero slots");
        assert!(e.to_string().contains("worker.slots"), "{e}");

        jail.set_env("QUAYSIDE_WORKER__SLOTS", "many");
        let e = Config::load(None).expect_err("wrong type");
        let msg = e.to_string().to_lowercase();
        assert!(
            msg.contains("worker.slots") && msg.contains("quayside_"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn the_result_ttl_floor_must_outlast_every_stale_worker() {
    let mut cfg = Config::default();
    // 30 s lease + 25 s drain + 120 s + 60 s wall times + 60 s backstop + 120 s give-up.
    assert_eq!(cfg.stale_window(), Duration::from_secs(415));
    cfg.queue.min_result_ttl_s = 415;
    let e = cfg.validate().expect_err("a floor inside the window");
    assert!(
        e.to_string().contains("queue.min_result_ttl_s") && e.to_string().contains("415"),
        "{e}"
    );
    cfg.queue.min_result_ttl_s = 416;
    cfg.validate().expect("just past the window");
    // Longer leases or wall times move the window: the default floor must follow.
    cfg.worker.lease_ms = 600_000;
    assert!(cfg.validate().is_err(), "a 10 min lease with a 416 s floor");
    let mut cfg = Config::default();
    cfg.queue.default_result_ttl_s = cfg.queue.min_result_ttl_s - 1;
    let e = cfg.validate().expect_err("default below the floor");
    assert!(e.to_string().contains("queue.default_result_ttl_s"), "{e}");
}

#[test]
fn quayside_variables_that_are_not_config_are_not_read_as_keys() {
    Jail::expect_with(|jail| {
        jail.create_file("q.toml", "[queue]\nname = \"builds\"\n")?;
        jail.set_env("QUAYSIDE_CONFIG", "q.toml");
        jail.set_env("QUAYSIDE_VERBOSE", "1");
        let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
        assert_eq!(c.queue.name, "builds");
        // A near miss of a real key is still refused.
        jail.set_env("QUAYSIDE_REDIS_URL", "redis://elsewhere:6379");
        let e = Config::load(None).expect_err("single underscore");
        assert!(e.to_string().contains("redis_url"), "{e}");
        Ok(())
    });
}

#[test]
fn missing_config_file_is_an_error() {
    Jail::expect_with(|_| {
        assert!(Config::load(Some(Path::new("nope.toml"))).is_err());
        Ok(())
    });
}

#[test]
fn kubernetes_settings_load_from_file_and_environment() {
    use RunnerBackend::Kubernetes;
    Jail::expect_with(|jail| {
        jail.create_file(
            "q.toml",
            "[runner]\nbackend = \"kubernetes\"\n[runner.kubernetes]\nnamespace = \"jobs\"\nimage_pull_secrets = [\"regcred\"]\n",
        )?;
        jail.set_env(
            "QUAYSIDE_RUNNER__KUBERNETES__IMAGE_REGISTRY",
            "reg.example/",
        );
        let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
        assert_eq!(c.runner.backend, Kubernetes);
        let k = &c.runner.kubernetes;
        assert_eq!(
            (k.namespace.as_str(), k.image_registry.as_str()),
            ("jobs", "reg.example/")
        );
        assert_eq!(k.image_pull_secrets, ["regcred"]);
        jail.set_env("QUAYSIDE_RUNNER__KUBERNETES__USER", "0:0");
        let err = Config::load(Some(Path::new("q.toml"))).expect_err("root refused");
        assert!(err.to_string().contains("runner.kubernetes.user"), "{err}");
        Ok(())
    });
}

#[test]
fn docker_settings_are_checked_and_name_their_key() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "d.toml",
            "[runner.docker]\nruntime = \"runsc\"\ntmpfs_bytes = 8388608\n",
        )?;
        let c = Config::load(Some(Path::new("d.toml"))).expect("loads");
        assert_eq!(c.runner.docker.runtime, "runsc");
        assert_eq!(c.runner.docker.tmpfs_bytes, 8 << 20);
        assert_eq!(
            c.runner.docker.uid_gid(),
            Some((10001, 10001)),
            "default user kept"
        );

        for (toml, key) in [
            ("user = \"0:0\"", "runner.docker.user"),
            ("user = \"runner\"", "runner.docker.user"),
            ("tmpfs_bytes = 1", "runner.docker.tmpfs_bytes"),
            ("max_open_files = 3", "runner.docker.max_open_files"),
            ("api_timeout_ms = 10", "runner.docker.api_timeout_ms"),
            ("uid_range = 0", "runner.docker.uid_range"),
            ("uid_range = 4294967295", "runner.docker.uid_range"),
        ] {
            jail.create_file("bad.toml", &format!("[runner.docker]\n{toml}\n"))?;
            let e = Config::load(Some(Path::new("bad.toml"))).expect_err(toml);
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__FILE_TRANSFER", "archive");
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__SECCOMP", "runtime_default");
        let c = Config::load(None).expect("env sets the transfer");
        assert_eq!(c.runner.docker.file_transfer, FileTransfer::Archive);
        assert_eq!(c.runner.docker.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(
            (c.runner.docker.uid_range, c.runner.kubernetes.seccomp),
            (1 << 20, SeccompProfile::Quayside),
            "per-attempt uids and Quayside's profile by default"
        );
        Ok(())
    });
}

#[test]
fn a_separate_password_is_redacted_everywhere() {
    let mut c = Config::default();
    c.redis.username = Some("quayside".into());
    c.redis.password = Some(Secret::new("hunter2-secret"));
    c.validate().expect("valid");
    assert!(!format!("{c:?}").contains("hunter2"), "Debug hides it");
    let printed = toml::to_string(&c.redacted()).expect("toml");
    assert!(
        !printed.contains("hunter2") && printed.contains("password = \"***\""),
        "{printed}"
    );
    let written = toml::to_string(&c).expect("toml");
    assert!(
        written.contains("hunter2"),
        "configs written for workers keep it"
    );
}

#[test]
fn secrets_from_the_environment_are_taken_verbatim() {
    Jail::expect_with(|jail| {
        for raw in ["123456", "[not-an-array]", "\"quoted\"", "true", "a=b,{c}"] {
            jail.set_env("QUAYSIDE_REDIS__PASSWORD", raw);
            jail.set_env("QUAYSIDE_REDIS__USERNAME", "42");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some(raw));
            assert_eq!(c.redis.username.as_deref(), Some("42"));
        }
        Ok(())
    });
}
