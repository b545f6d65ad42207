//! `deploy/k8s` agrees with the code: the worker config it ships loads and validates, the
//! grace period covers the drain timeout, the NetworkPolicy selects the pods the runner labels,
//! the job service account it configures exists, and the seccomp installer puts the profile
//! the worker embeds where job pods look for it. (Schema validity of every manifest is
//! `scripts/validate-k8s.sh`'s job.)

use std::path::{Path, PathBuf};

use quayside_common::config::{Config, RunnerBackend};
use quayside_worker::runner::kubernetes::spec::{LABEL_MANAGED, MANAGER};
use serde_json::Value;

fn base(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s/base")
        .join(file)
}

fn yaml_docs(file: &str) -> Vec<Value> {
    yaml_docs_at(&base(file))
}

fn yaml_docs_at(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect()
}

fn shipped_config() -> Config {
    let cm = &yaml_docs("worker-config.yaml")[0];
    let toml = cm["data"]["config.toml"].as_str().expect("config.toml");
    let path = std::env::temp_dir().join(format!("qs-deploy-{:x}.toml", rand::random::<u64>()));
    std::fs::write(&path, toml).expect("write");
    let cfg = Config::load(Some(&path));
    let _ = std::fs::remove_file(&path);
    cfg.expect("the shipped worker config loads and validates")
}

#[test]
fn shipped_worker_config_is_valid_and_matches_the_manifests() {
    let cfg = shipped_config();
    assert_eq!(cfg.runner.backend, RunnerBackend::Kubernetes);
    let accounts: Vec<String> = yaml_docs("serviceaccounts.yaml")
        .iter()
        .map(|sa| sa["metadata"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert!(
        accounts.contains(&cfg.runner.kubernetes.service_account),
        "job service account {:?} is shipped",
        cfg.runner.kubernetes.service_account
    );
    let deploy = &yaml_docs("deployment.yaml")[0];
    let grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let drain_s = cfg.worker.drain_timeout_ms.div_ceil(1000);
    assert!(
        grace >= drain_s + 5,
        "grace {grace}s must exceed the drain timeout {drain_s}s with a margin"
    );
    let binding = &yaml_docs("rolebinding.yaml")[0];
    assert_eq!(
        binding["subjects"][0]["name"], deploy["spec"]["template"]["spec"]["serviceAccountName"],
        "the Role is bound to the worker's service account"
    );
}

#[test]
fn network_policy_selects_job_pods_and_denies_everything() {
    let np = &yaml_docs("networkpolicy-jobs.yaml")[0];
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"][LABEL_MANAGED],
        MANAGER
    );
    assert_eq!(
        np["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(np["spec"]["ingress"], serde_json::json!([]));
    assert_eq!(np["spec"]["egress"], serde_json::json!([]));
}

#[test]
fn the_seccomp_installer_puts_the_embedded_profile_where_job_pods_load_it() {
    use quayside_common::config::SeccompProfile;
    use quayside_worker::runner::sandbox::seccomp;

    let cfg = shipped_config();
    assert_eq!(cfg.runner.sandbox.seccomp, SeccompProfile::Quayside);
    let k = &cfg.runner.kubernetes;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/seccomp");
    let shipped = std::fs::read_to_string(dir.join("quayside.json")).expect("profile");
    assert_eq!(shipped, seccomp::PROFILE, "one profile for both runners");
    let kustomization = &yaml_docs_at(&dir.join("kustomization.yaml"))[0];
    assert_eq!(
        kustomization["configMapGenerator"][0]["files"],
        serde_json::json!(["quayside.json"])
    );
    let ds = &yaml_docs_at(&dir.join("installer.yaml"))[0];
    let pod = &ds["spec"]["template"]["spec"];
    let host = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["hostPath"]["path"].as_str())
        .expect("hostPath");
    assert_eq!(
        host, "/var/lib/kubelet/seccomp",
        "the kubelet's seccomp root"
    );
    let install = pod["initContainers"][0]["command"][2]
        .as_str()
        .expect("install command");
    assert!(
        install.ends_with(&format!("/host/{}", k.seccomp_localhost_profile)),
        "{install} must write {}",
        k.seccomp_localhost_profile
    );
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
}
