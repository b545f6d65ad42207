//! The randomized model test (see `quayside_e2e::model`): the real scripts on a private
//! redis-server (AOF `always`, restarted by the test), random interleavings, the model's
//! invariants after every step. `MODEL_SEED=<n>` replays a run exactly; `MODEL_STEPS=<n>` sets
//! its length (`scripts/soak.sh model` runs a million); `MODEL_WITHOUT=log,restart` leaves
//! actions out, to narrow a failure down.

use quayside_e2e::{model, PrivateRedis};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn random_interleavings_keep_every_promise_of_the_protocol() {
    let seed = env_u64("MODEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let steps = env_u64("MODEL_STEPS").unwrap_or(4_000) as usize;
    eprintln!(
        "model test: seed {seed}, {steps} steps (replay: MODEL_SEED={seed} MODEL_STEPS={steps} MODEL_WITHOUT={})",
        std::env::var("MODEL_WITHOUT").unwrap_or_default()
    );
    // On tmpfs when there is one: AOF `always` fsyncs every write, and a SIGKILLed process (not
    // a crashed machine) loses nothing that was written either way.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("quayside-model-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("redis dir");
    let mut redis = PrivateRedis::start(&dir).expect("redis-server");
    let started = std::time::Instant::now();
    let without = std::env::var("MODEL_WITHOUT").unwrap_or_default();
    let result = model::run(&mut redis, seed, steps, model::weights(&without)).await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(stats) => eprintln!(
            "model test: seed {seed} passed in {:.1}s: {stats:?}",
            started.elapsed().as_secs_f64()
        ),
        Err(v) => panic!("{v}"),
    }
}
