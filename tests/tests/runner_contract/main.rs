//! The runner contract: what every backend promises the worker, checked against each one by the
//! same suite functions ([`suite`]). Docker runs real programs on the real engine (needs the
//! runner images); Kubernetes runs on the scripted API server of `worker/tests/fake_api`, with
//! the test playing the kubelet (no cluster exists here, so what a real kubelet and runtime do
//! is not proven: see `deploy/k8s/README.md`).
//!
//! Each case runs as `docker::<case>` and `kubernetes::<case>`: every ending maps to the same
//! status (exit 0, exit n, signal, build error, timeout, OOM, output cap, killed from outside),
//! a cancel and a dropped future remove the sandbox, a missing image is a runner error, and
//! output shows while the program runs (a prompt without a newline included), and every run
//! reports its cpu time and peak memory within the bounds. For those measured C
//! programs the Kubernetes world plays the kubelet for real: it runs the pod's own command in
//! the pod's image on the Docker engine, with the ConfigMap as files, and serves its output as
//! the pod log.

#[allow(
    dead_code,
    reason = "the fake serves kubernetes_flows too, which uses the faults and accesses"
)]
#[path = "../../../worker/tests/fake_api/mod.rs"]
mod fake_api;
mod suite;
mod with_docker;
mod with_kubernetes;

/// One `#[tokio::test]` per suite function, against the world `$world` builds.
macro_rules! contract {
    ($backend:ident, $world:expr) => {
        mod $backend {
            use super::suite;

            #[tokio::test(flavor = "multi_thread")]
            async fn exit_zero_is_succeeded_with_both_streams() {
                suite::exit_zero($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn exit_n_is_failed_with_its_code() {
                suite::exit_n($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn killed_by_a_signal_is_failed_with_the_signal() {
                suite::signal($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_failed_build_is_compile_error() {
                suite::compile_error($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn past_the_run_wall_time_is_timed_out_with_the_output_so_far() {
                suite::timeout($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn out_of_memory_is_memory_exceeded() {
                suite::oom($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn past_the_output_cap_is_output_exceeded_with_the_capped_output() {
                suite::output_cap($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn killed_from_outside_is_an_infrastructure_failure() {
                suite::killed_from_outside($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_cancel_is_cancelled_with_the_output_so_far_and_removes_the_sandbox() {
                suite::cancel($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_prompt_without_a_newline_shows_while_the_program_waits() {
                suite::prompt($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_dropped_run_removes_the_sandbox() {
                suite::dropped($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_missing_image_is_image_missing() {
                suite::image_missing($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn touching_100_mib_reports_100_mib_within_10_percent() {
                suite::measured($world, suite::Work::TouchesMemory).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_1_s_spin_reports_1000_ms_of_cpu_within_15_percent() {
                suite::measured($world, suite::Work::Spins).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn tests_run_after_one_build_each_with_its_verdict() {
                suite::tests($world).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_1_s_sleep_reports_almost_no_cpu() {
                suite::measured($world, suite::Work::Sleeps).await;
            }
        }
    };
}

contract!(docker, crate::with_docker::Docker::new().await);
contract!(kubernetes, crate::with_kubernetes::Kubernetes::new());
