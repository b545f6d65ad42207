//! A scripted Kubernetes API server in process: enough of core/v1 ConfigMaps and Pods and
//! batch/v1 Jobs for the runner (create, patch, delete, list with label selectors and a
//! `resourceVersion`, watch from a `resourceVersion`, pod logs), served to `kube::Client`
//! through a `tower::service_fn`, as kube-rs's own tests do. It records every request as an
//! RBAC (verb, group, resource) triple and can fail chosen requests. The test itself plays the
//! Job controller and the kubelet through [`FakeApi::create_pod`] and friends.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use quayside_worker::runner::{Fleet, RunRequest};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the runner may be told instead of an answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The API server answers with this status code.
    Status(u16),
    /// Nothing listens (connection refused).
    Refused,
}

/// An RBAC rule triple: (verb, apiGroup, resource).
pub type Access = (String, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    /// (resource, name) -> object. Resources: "configmaps", "jobs", "pods".
    objects: BTreeMap<(String, String), Value>,
    /// Every change, for watches that start from an older `resourceVersion`.
    history: Vec<(u64, String, &'static str, Value)>,
    requests: Vec<Access>,
    faults: Vec<(String, String, Fault)>,
    logs: BTreeMap<String, (Vec<u8>, bool)>,
    /// Logs written while they are followed ([`FakeApi::live_log`]); taken by the first GET.
    live_logs: BTreeMap<String, mpsc::UnboundedReceiver<Bytes>>,
}

/// The fake server. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(u64, String, &'static str, Value)>,
    changed: watch::Sender<u64>,
}

fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let v = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("fake api: {reason}"), "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(body(v.to_string()))
        .expect("response")
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body(v.to_string()))
        .expect("response")
}

/// `a=b,c` against an object's labels.
fn matches(selector: Option<&str>, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => !labels[term].is_null(),
        })
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(1024).0,
            changed: watch::channel(0).0,
        }
    }

    /// A client whose every request this fake answers, defaulting to namespace `jobs`.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { fake.handle(req).await }
        });
        kube::Client::new(svc, "jobs")
    }

    /// Makes the next `verb` request on `resource` fail with `fault`.
    pub fn fail_next(&self, verb: &str, resource: &str, fault: Fault) {
        self.lock()
            .faults
            .push((verb.into(), resource.into(), fault));
    }

    /// Every (verb, group, resource) requested so far.
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn names(&self, resource: &str) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(r, _)| r == resource)
            .map(|(_, n)| n.clone())
            .collect()
    }

    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(resource.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Puts an object in place, as another worker (or a dead one) would have.
    pub fn insert(&self, resource: &str, obj: Value) {
        self.put(resource, obj, "ADDED");
    }

    /// Waits until some object of `resource` exists; returns its name.
    pub async fn created(&self, resource: &str) -> String {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(name) = self.names(resource).into_iter().next() {
                return name;
            }
            rx.changed().await.expect("fake alive");
        }
    }

    /// Waits until `done` holds for this fake.
    pub async fn until(&self, done: impl Fn(&FakeApi) -> bool) {
        let mut rx = self.changed.subscribe();
        while !done(self) {
            rx.changed().await.expect("fake alive");
        }
    }

    /// Waits until no object of `resource` is left.
    pub async fn gone(&self, resource: &str) {
        let mut rx = self.changed.subscribe();
        while !self.names(resource).is_empty() {
            rx.changed().await.expect("fake alive");
        }
    }

    /// Plays the Job controller: the Job's pod, Pending, with the template's labels.
    pub fn create_pod(&self, job: &str) -> String {
        let job_obj = self.get("jobs", job).expect("job exists");
        let template = &job_obj["spec"]["template"];
        let name = format!("{job}-pod");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "jobs", "labels": template["metadata"]["labels"]},
            "spec": template["spec"], "status": {"phase": "Pending"}});
        self.put("pods", pod, "ADDED");
        name
    }

    /// Plays the Job controller for the next attempt: waits for its Job (and its ConfigMap,
    /// owned by the Job), then creates its pod. Returns (job, pod).
    pub async fn start_pod(&self) -> (String, String) {
        let job = self.created("jobs").await;
        let owned = |f: &FakeApi| {
            f.get("configmaps", &job)
                .is_some_and(|cm| cm["metadata"]["ownerReferences"][0]["kind"] == "Job")
        };
        self.until(owned).await;
        let pod = self.create_pod(&job);
        (job, pod)
    }

    /// Plays the kubelet: replaces the pod's status.
    pub fn set_pod_status(&self, pod: &str, status: Value) {
        let mut obj = self.get("pods", pod).expect("pod exists");
        obj["status"] = status;
        self.put("pods", obj, "MODIFIED");
    }

    /// Plays someone deleting the pod: it gets a deletion timestamp (and is still there).
    pub fn mark_deleting(&self, pod: &str) {
        let mut obj = self.get("pods", pod).expect("pod exists");
        obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
        self.put("pods", obj, "MODIFIED");
    }

    /// What the pod's log holds; `hold_open` keeps a followed log open (a program still running).
    pub fn set_log(&self, pod: &str, log: Vec<u8>, hold_open: bool) {
        self.lock().logs.insert(pod.to_owned(), (log, hold_open));
    }

    /// A log the test writes while the runner follows it (a kubelet streaming a running
    /// container's output): each message is sent as it comes; dropping the sender ends the log.
    pub fn live_log(&self, pod: &str) -> mpsc::UnboundedSender<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().live_logs.insert(pod.to_owned(), rx);
        tx
    }

    /// The two marker nonces the runner put in the attempt's ConfigMap.
    pub fn nonces(&self, name: &str) -> (String, String) {
        let cm = self.get("configmaps", name).expect("configmap");
        let line = cm["data"]["nonce"]
            .as_str()
            .expect("nonce")
            .trim()
            .to_owned();
        let (a, b) = line.split_once(' ').expect("two nonces");
        (a.to_owned(), b.to_owned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake api lock")
    }

    fn put(&self, resource: &str, mut obj: Value, kind: &'static str) {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        st.objects.insert((resource.to_owned(), name), obj.clone());
        self.record(&mut st, rv, resource, kind, obj);
    }

    fn remove(&self, resource: &str, name: &str) -> Option<Value> {
        let mut st = self.lock();
        let obj = st.objects.remove(&(resource.to_owned(), name.to_owned()))?;
        st.rv += 1;
        let rv = st.rv;
        self.record(&mut st, rv, resource, "DELETED", obj.clone());
        // Deleting a Job with background propagation: the garbage collector takes its pods
        // and the ConfigMaps it owns.
        if resource == "jobs" {
            let owned: Vec<(String, String)> = st
                .objects
                .iter()
                .filter(|((r, _), o)| {
                    (r == "pods" && o["metadata"]["labels"]["quayside.sandbox"] == name)
                        || (r == "configmaps"
                            && o["metadata"]["ownerReferences"][0]["name"] == name)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in owned {
                if let Some(o) = st.objects.remove(&key) {
                    st.rv += 1;
                    let rv = st.rv;
                    self.record(&mut st, rv, &key.0, "DELETED", o);
                }
            }
        }
        Some(obj)
    }

    fn record(&self, st: &mut State, rv: u64, resource: &str, kind: &'static str, obj: Value) {
        st.history
            .push((rv, resource.to_owned(), kind, obj.clone()));
        let _ = self.events.send((rv, resource.to_owned(), kind, obj));
        self.changed.send_replace(rv);
    }

    async fn handle(
        &self,
        req: Request<kube::client::Body>,
    ) -> Result<Response<Body>, std::io::Error> {
        let (parts, req_body) = req.into_parts();
        let bytes = req_body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // /api/v1/namespaces/{ns}/{res}[/{name}[/{sub}]] or /apis/batch/v1/namespaces/...
        let (group, rest) = match segs.as_slice() {
            ["api", "v1", "namespaces", _, rest @ ..] => ("", rest),
            ["apis", "batch", "v1", "namespaces", _, rest @ ..] => ("batch", rest),
            _ => return Ok(status(404, "NotFound")),
        };
        let (resource, name, sub) = match rest {
            [r] => (r.to_string(), None, None),
            [r, n] => (r.to_string(), Some(n.to_string()), None),
            [r, n, s] => (format!("{r}/{s}"), Some(n.to_string()), Some(s.to_string())),
            _ => return Ok(status(404, "NotFound")),
        };
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (&parts.method, &name) {
            (&Method::POST, _) => "create",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::GET, None) if watching => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            _ => return Ok(status(405, "MethodNotAllowed")),
        };
        let fault = {
            let mut st = self.lock();
            st.requests
                .push((verb.to_owned(), group.to_owned(), resource.clone()));
            let at = st
                .faults
                .iter()
                .position(|(v, r, _)| v == verb && *r == resource);
            at.map(|i| st.faults.remove(i).2)
        };
        match fault {
            Some(Fault::Refused) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))
            }
            Some(Fault::Status(code)) => return Ok(status(code, "Injected")),
            None => {}
        }
        let selector = query.get("labelSelector").map(String::as_str);
        Ok(match (verb, name, sub.as_deref()) {
            ("create", _, _) => {
                let mut obj: Value = serde_json::from_slice(&bytes).expect("json body");
                let n = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if self.get(&resource, &n).is_some() {
                    return Ok(status(409, "AlreadyExists"));
                }
                obj["metadata"]["uid"] = format!("uid-{n}").into();
                obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
                self.put(&resource, obj, "ADDED");
                ok(&self.get(&resource, &n).expect("stored"))
            }
            ("patch", Some(n), _) => {
                let Some(mut obj) = self.get(&resource, &n) else {
                    return Ok(status(404, "NotFound"));
                };
                let patch: Value = serde_json::from_slice(&bytes).expect("json patch");
                merge(&mut obj, &patch);
                self.put(&resource, obj, "MODIFIED");
                ok(&self.get(&resource, &n).expect("stored"))
            }
            ("delete", Some(n), _) => match self.remove(&resource, &n) {
                Some(obj) => ok(&obj),
                None => status(404, "NotFound"),
            },
            ("get", Some(n), Some("log")) => {
                let live = self.lock().live_logs.remove(&n);
                if let Some(rx) = live {
                    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                        let chunk = rx.recv().await?;
                        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
                    });
                    return Ok(Response::builder()
                        .body(StreamBody::new(chunks).boxed_unsync())
                        .expect("response"));
                }
                let Some((log, hold)) = self.lock().logs.get(&n).cloned() else {
                    return Ok(status(400, "BadRequest"));
                };
                let first = futures_util::stream::once(async move {
                    Ok::<_, Infallible>(Frame::data(Bytes::from(log)))
                });
                let b: Body = if hold {
                    StreamBody::new(first.chain(futures_util::stream::pending())).boxed_unsync()
                } else {
                    StreamBody::new(first).boxed_unsync()
                };
                Response::builder().body(b).expect("response")
            }
            ("get", Some(n), _) => match self.get(&resource, &n) {
                Some(obj) => ok(&obj),
                None => status(404, "NotFound"),
            },
            ("list", None, _) => {
                let st = self.lock();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((r, _), o)| *r == resource && matches(selector, o))
                    .map(|(_, o)| o.clone())
                    .collect();
                ok(
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                )
            }
            ("watch", None, _) => self.watch(
                &resource,
                selector.map(str::to_owned),
                query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
            _ => status(404, "NotFound"),
        })
    }

    /// Replays changes after `from`, then streams live ones, as newline-delimited JSON.
    fn watch(&self, resource: &str, selector: Option<String>, from: u64) -> Response<Body> {
        let (past, rx) = {
            let st = self.lock();
            let past: Vec<_> = st
                .history
                .iter()
                .filter(|(rv, r, ..)| *rv > from && r == resource)
                .cloned()
                .collect();
            (past, self.events.subscribe())
        };
        let last = past.last().map_or(from, |e| e.0);
        let live = tokio_stream_from(rx).filter(move |e| std::future::ready(e.0 > last));
        let resource = resource.to_owned();
        let lines = futures_util::stream::iter(past)
            .chain(live)
            .filter(move |(_, r, _, o)| {
                std::future::ready(*r == resource && matches(selector.as_deref(), o))
            })
            .map(|(_, _, kind, obj)| {
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
                    "{}\n",
                    json!({"type": kind, "object": obj})
                ))))
            });
        Response::builder()
            .body(StreamBody::new(lines).boxed_unsync())
            .expect("response")
    }
}

fn tokio_stream_from<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A small Python job, the same for every scripted flow (the kubelet plays its output).
pub fn request(job_id: quayside_common::JobId, fleet: Fleet) -> RunRequest {
    RunRequest {
        job_id,
        attempt: 1,
        kind: quayside_common::JobKind::Run,
        language: "python".into(),
        language_config: quayside_common::config::default_languages()["python"].clone(),
        files: BTreeMap::from([("main.py".to_owned(), "print('hi')".to_owned())]),
        compiler_options: vec![],
        args: vec![],
        stdin: String::new(),
        limits: quayside_common::Limits::DEFAULT,
        fleet,
        tests: None,
    }
}

/// A pod status with its container running.
pub fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": [{"name": "job", "image": "i", "imageID": "",
        "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})
}

/// A pod status with its container ended with `code` (`reason` e.g. OOMKilled).
pub fn terminated(code: i64, reason: Option<&str>) -> Value {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    json!({"phase": phase, "containerStatuses": [{"name": "job", "image": "i", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason}}}]})
}

/// A pod status with its container waiting to start for `reason` (e.g. ImagePullBackOff).
pub fn waiting(reason: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{"name": "job", "image": "i", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}]})
}
