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
fn tenants_load_from_the_file_with_env_overrides_and_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "t.toml",
            "[tenants.acme]\nweight = 3\nmax_running = 20\n\
             tokens = [\"acme-token-0123456789\"]\n[tenants.beta]\n",
        )?;
        jail.set_env("QUAYSIDE_TENANTS__ACME__MAX_QUEUED", "500");
        let c = Config::load(Some(Path::new("t.toml"))).expect("loads");
        let acme = &c.tenants["acme"];
        assert_eq!((acme.weight, acme.max_running), (3, 20), "from the file");
        assert_eq!(acme.max_queued, 500, "from the environment");
        assert_eq!(c.tenants["beta"], TenantConfig::default(), "defaults");
        assert!(
            !format!("{:?}", c.redacted()).contains("acme-token"),
            "tokens redacted"
        );

        jail.create_file("bad.toml", "[tenants.acme]\nwieght = 3\n")?;
        let e = Config::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
        assert!(e.to_string().contains("wieght"), "{e}");
        Ok(())
    });
}

#[test]
fn webhooks_load_with_the_usual_precedence_are_checked_and_the_secret_is_redacted() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "w.toml",
            "[webhooks]\nallowed_hosts = [\"hooks.example.com\", \"*.acme.io:8443\"]\n\
             retry_for_s = 600\n",
        )?;
        jail.set_env("QUAYSIDE_WEBHOOKS__SECRET", "0123456789012345678");
        jail.set_env("QUAYSIDE_WEBHOOKS__TIMEOUT_MS", "2500");
        let c = Config::load(Some(Path::new("w.toml"))).expect("loads");
        let w = &c.webhooks;
        assert_eq!(w.allowed_hosts, ["hooks.example.com", "*.acme.io:8443"]);
        assert_eq!((w.retry_for_s, w.timeout_ms), (600, 2500));
        assert_eq!(
            w.secret.as_ref().map(Secret::expose),
            Some("0123456789012345678"),
            "digits taken verbatim, not as a number"
        );
        assert_eq!(w.backoff_base_ms, 1000, "defaults");
        let printed = format!(
            "{:?} {}",
            c.redacted(),
            toml::to_string(&c.redacted()).expect("toml")
        );
        assert!(!printed.contains("0123456789012345678"), "{printed}");

        jail.clear_env();
        for (file, key) in [
            (
                "[webhooks]\nallowed_hosts = [\"a/b\"]\n",
                "webhooks.allowed_hosts",
            ),
            ("[webhooks]\nsecret = \"short\"\n", "webhooks.secret"),
            ("[webhooks]\ntimeout_ms = 1\n", "webhooks.timeout_ms"),
            ("[webhooks]\nretry_for_s = 0\n", "webhooks.retry_for_s"),
        ] {
            jail.create_file("bad.toml", file)?;
            let e = Config::load(Some(Path::new("bad.toml"))).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
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
        jail.set_env("QUAYSIDE_RUNNER__KUBERNETES__PENDING_TIMEOUT_MS", "10");
        let err = Config::load(Some(Path::new("q.toml"))).expect_err("too short");
        assert!(
            err.to_string()
                .contains("runner.kubernetes.pending_timeout_ms"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn the_warm_pool_is_on_with_one_per_language_and_sized_per_language_by_file_and_env() {
    let c = Config::default();
    assert_eq!(c.runner.docker.warm.size_of("c"), 1, "on by default");
    Jail::expect_with(|jail| {
        jail.create_file(
            "w.toml",
            "[runner.docker.warm]\nmax_idle_s = 30\nsize = { c = 3, python = 2 }\n",
        )?;
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__WARM__SIZE__PYTHON", "0");
        let c = Config::load(Some(Path::new("w.toml"))).expect("loads");
        let warm = &c.runner.docker.warm;
        assert_eq!((warm.size_of("c"), warm.size_of("python")), (3, 0));
        assert_eq!((warm.size_of("go"), warm.max_idle_s), (1, 30));
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__WARM__ENABLED", "false");
        let off = Config::load(Some(Path::new("w.toml"))).expect("loads");
        assert_eq!(
            off.runner.docker.warm.size_of("c"),
            0,
            "off for every language"
        );
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__WARM__SIZE__COBOL", "1");
        let err = Config::load(Some(Path::new("w.toml"))).expect_err("unknown language");
        assert!(err.to_string().contains("runner.docker.warm.size"), "{err}");
        assert!(err.to_string().contains("cobol"), "{err}");
        Ok(())
    });
}

#[test]
fn docker_settings_load_from_file_and_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("d.toml", "[runner.docker]\nruntime = \"runsc\"\n")?;
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__FILE_TRANSFER", "archive");
        let c = Config::load(Some(Path::new("d.toml"))).expect("loads");
        assert_eq!(c.runner.docker.runtime, "runsc");
        assert_eq!(c.runner.docker.file_transfer, FileTransfer::Archive);
        Ok(())
    });
}

#[test]
fn sandbox_settings_are_one_section_for_both_backends_with_the_usual_precedence() {
    Jail::expect_with(|jail| {
        for (toml, key) in [
            ("user = \"0:0\"", "runner.sandbox.user"),
            ("user = \"runner\"", "runner.sandbox.user"),
            ("user = \"-1:5\"", "runner.sandbox.user"),
            ("work_dir_bytes = 1", "runner.sandbox.work_dir_bytes"),
            ("max_open_files = 3", "runner.sandbox.max_open_files"),
            ("api_timeout_ms = 10", "runner.sandbox.api_timeout_ms"),
            ("uid_range = 0", "runner.sandbox.uid_range"),
            ("uid_range = 4294967295", "runner.sandbox.uid_range"),
        ] {
            jail.create_file("bad.toml", &format!("[runner.sandbox]\n{toml}\n"))?;
            let e = Config::load(Some(Path::new("bad.toml"))).expect_err(toml);
            assert!(e.to_string().contains(key), "{toml}: {e}");
        }
        jail.create_file(
            "s.toml",
            "[runner.sandbox]\nuser = \"20000:20000\"\nwork_dir_bytes = 8388608\nuid_range = 7\n",
        )?;
        jail.set_env("QUAYSIDE_RUNNER__SANDBOX__UID_RANGE", "1");
        jail.set_env("QUAYSIDE_RUNNER__SANDBOX__SECCOMP", "runtime_default");
        let c = Config::load(Some(Path::new("s.toml"))).expect("loads");
        let s = &c.runner.sandbox;
        assert_eq!(
            s.user,
            JobUser {
                uid: 20000,
                gid: 20000
            },
            "file over default"
        );
        assert_eq!(s.work_dir_bytes, 8 << 20);
        assert_eq!(s.uid_range, 1, "environment over file");
        assert_eq!(s.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(s.max_open_files, 1024, "default kept");

        Ok(())
    });
}

#[test]
fn the_former_per_backend_sandbox_keys_still_set_the_shared_ones_with_the_usual_precedence() {
    Jail::expect_with(|jail| {
        // As deploy/k8s and older configs write them: each former key sets runner.sandbox.
        jail.create_file(
            "old.toml",
            "[runner.docker]\ntmpfs_bytes = 8388608\nuser = \"20000:20000\"\n\
             [runner.kubernetes]\nseccomp = \"runtime_default\"\nuid_range = 1\n",
        )?;
        let c = Config::load(Some(Path::new("old.toml"))).expect("former keys load");
        let s = &c.runner.sandbox;
        assert_eq!(s.work_dir_bytes, 8 << 20);
        assert_eq!(s.user.to_string(), "20000:20000");
        assert_eq!(
            (s.seccomp, s.uid_range),
            (SeccompProfile::RuntimeDefault, 1)
        );

        // The environment beats the file whichever name either uses.
        jail.set_env("QUAYSIDE_RUNNER__SANDBOX__UID_RANGE", "5");
        jail.set_env("QUAYSIDE_RUNNER__KUBERNETES__API_TIMEOUT_MS", "5000");
        jail.create_file(
            "new.toml",
            "[runner.sandbox]\nuid_range = 7\napi_timeout_ms = 9000\n",
        )?;
        let c = Config::load(Some(Path::new("new.toml"))).expect("loads");
        assert_eq!(
            (c.runner.sandbox.uid_range, c.runner.sandbox.api_timeout_ms),
            (5, 5000)
        );

        // A former key's value is checked as the shared key's.
        jail.set_env("QUAYSIDE_RUNNER__DOCKER__USER", "0:0");
        let e = Config::load(None).expect_err("root").to_string();
        assert!(e.contains("runner.sandbox.user"), "{e}");

        // Two names of one setting disagreeing in one source: one would silently lose.
        jail.create_file(
            "both.toml",
            "[runner.docker]\nuser = \"20000:20000\"\n[runner.kubernetes]\nuser = \"30000:30000\"\n",
        )?;
        let e = Config::load(Some(Path::new("both.toml")))
            .expect_err("two users")
            .to_string();
        assert!(
            e.contains("runner.kubernetes.user") && e.contains("runner.sandbox.user"),
            "{e}"
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

#[test]
fn cluster_nodes_load_from_file_and_environment_and_exclude_sentinel() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "q.toml",
            "[redis]\nurl = \"rediss://:pw@ignored:1\"\n[redis.cluster]\nnodes = [\"10.0.0.1:7000\"]\n",
        )?;
        let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
        let nodes = |c: &Config| c.redis.cluster.as_ref().map(|k| k.nodes.clone());
        assert_eq!(nodes(&c), Some(vec!["10.0.0.1:7000".to_owned()]));
        jail.set_env("QUAYSIDE_REDIS__CLUSTER__NODES", "a:7000, b:7001");
        let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
        assert_eq!(nodes(&c), Some(vec!["a:7000".to_owned(), "b:7001".into()]));
        jail.set_env("QUAYSIDE_REDIS__SENTINEL__MASTER", "m");
        jail.set_env("QUAYSIDE_REDIS__SENTINEL__ADDRESSES", "s:26379");
        let err = Config::load(Some(Path::new("q.toml"))).expect_err("both");
        assert!(err.to_string().contains("redis.cluster"), "{err}");
        assert!(err.to_string().contains("not both"), "{err}");
        jail.set_env("QUAYSIDE_REDIS__SENTINEL__MASTER", "");
        Ok(())
    });
}
