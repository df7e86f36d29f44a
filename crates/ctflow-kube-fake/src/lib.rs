//! A **fake** Kubernetes API server, in process, for ctflow's tests only.
//!
//! No real API server can run on the machines ctflow is built and tested on (no
//! kube-apiserver, kind, k3s or container runtime is installable there), so the
//! controller is driven end to end against this fake instead. It is deliberately small
//! and implements only the parts of the API semantics the controller and kube-runtime
//! rely on, faithfully:
//!
//! - list (label selectors `k=v`, `k!=v`, `k in (a,b)`, `k`; field selectors on
//!   `metadata.name` / `metadata.namespace`), with the collection's `resourceVersion`;
//! - watch from a `resourceVersion`: history newer than it is replayed, then live events;
//!   a version older than the kept history is answered `410 Gone` (an `ERROR` event), so
//!   kube's watcher re-lists; `timeoutSeconds` ends the stream;
//! - get, create (`generateName`, uid, `creationTimestamp`, `generation`), replace with
//!   optimistic concurrency (a stale `resourceVersion` is `409 Conflict`), delete;
//! - patches: JSON patch (including `test`), merge patch, strategic merge (as a merge),
//!   server-side apply (as a merge; on `/status` the applied status replaces the old, as
//!   it does for a single field manager that owns all of it);
//! - the status subresource: writes to `/status` change only `.status`, writes to the
//!   object never change `.status`; `metadata.generation` grows only when the spec does;
//! - deletion honours finalizers (`deletionTimestamp` first, gone when the last finalizer
//!   is removed) and cascades to objects whose `ownerReferences` name the deleted one;
//! - `pods/{name}/log`.
//!
//! What it does not do: admission, schema validation, defaulting, managed-fields
//! conflicts, RBAC, pagination, bookmarks, discovery. Test helpers (`objects`, `set_status`,
//! `set_log`, `fail_next`, `drop_watches`, `forget_history`) stand in for the cluster's
//! other controllers and for faults.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A kind of object the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceType {
    /// `""` for the core group.
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    has_status: bool,
}

const RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "ctflow.dev",
        version: "v1alpha1",
        plural: "trainingpipelines",
        kind: "TrainingPipeline",
        has_status: true,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        plural: "jobs",
        kind: "Job",
        has_status: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        has_status: true,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        has_status: false,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        has_status: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        has_status: false,
    },
];

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn resource(plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    plural: &'static str,
    object: Value,
}

/// A request the fake answered, for tests that assert on the sequence of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    plural: String,
    code: u16,
    remaining: u32,
}

struct Inner {
    resource_version: u64,
    /// (plural, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// Changes older than this were dropped from the history.
    oldest_kept: u64,
    logs: BTreeMap<(String, String), String>,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    uid_counter: u64,
    expired_watches: u32,
}

/// The fake API server. Clone it freely; clones share one state.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
    /// Ends every open watch: the connection dropped (`false`), or the watch's position
    /// was compacted away (`true`: a `410 Gone` ERROR event first).
    drops: broadcast::Sender<bool>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        FakeApiServer::new()
    }
}

impl FakeApiServer {
    pub fn new() -> FakeApiServer {
        let (changes, _) = broadcast::channel(4096);
        let (drops, _) = broadcast::channel(16);
        FakeApiServer {
            inner: Arc::new(Mutex::new(Inner {
                resource_version: 100,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 1000,
                oldest_kept: 100,
                logs: BTreeMap::new(),
                requests: Vec::new(),
                faults: Vec::new(),
                uid_counter: 0,
                expired_watches: 0,
            })),
            changes,
            drops,
        }
    }

    /// A `kube::Client` talking to this fake without any socket.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// The fake as an axum router (to serve it on a socket for a process under test).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// A kubeconfig file's text pointing at `http://{address}`.
    pub fn kubeconfig(address: std::net::SocketAddr, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{address}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    namespace: {namespace}\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        )
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ------------------------------------------------------------ test helpers

    /// The stored objects of a kind (`"jobs"`, `"trainingpipelines"`, ...) in a namespace.
    pub fn objects(&self, plural: &str, namespace: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((p, ns, _), _)| p == plural && ns == namespace)
            .map(|(_, object)| object.clone())
            .collect()
    }

    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Creates or replaces an object as another actor would (`kubectl apply`): the
    /// same rules as a request.
    pub fn apply(&self, plural: &str, namespace: &str, object: Value) -> Result<Value, String> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let exists = self.object(plural, namespace, &name).is_some();
        let outcome = if exists {
            let mut merged = object;
            if let Some(current) = self.object(plural, namespace, &name) {
                merged["metadata"]["resourceVersion"] =
                    current["metadata"]["resourceVersion"].clone();
                merged["metadata"]["finalizers"] = current["metadata"]["finalizers"].clone();
            }
            self.write(plural, namespace, &name, Write::Replace(merged), false)
        } else {
            self.create(plural, namespace, object)
        };
        outcome.map_err(|(code, message)| format!("{code}: {message}"))
    }

    /// Deletes an object as another actor would (`kubectl delete`).
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, String> {
        self.remove(plural, namespace, name)
            .map_err(|(code, message)| format!("{code}: {message}"))
    }

    /// Sets an object's status as the cluster's own controllers would (a Job's
    /// conditions, a Pod's phase).
    pub fn set_status(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, String> {
        self.write(plural, namespace, name, Write::Status(status), true)
            .map_err(|(code, message)| format!("{code}: {message}"))
    }

    /// What `GET pods/{name}/log` answers.
    pub fn set_log(&self, namespace: &str, pod: &str, text: &str) {
        self.lock()
            .logs
            .insert((namespace.into(), pod.into()), text.into());
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The next `times` requests with this method on this kind fail with `code`.
    pub fn fail_next(&self, method: &str, plural: &str, code: u16, times: u32) {
        if let Ok(method) = method.parse() {
            self.lock().faults.push(Fault {
                method,
                plural: plural.into(),
                code,
                remaining: times,
            });
        }
    }

    /// Ends every open watch, as a dropped connection would.
    pub fn drop_watches(&self) {
        let _ = self.drops.send(false);
    }

    /// How many watches were answered `410 Gone`.
    pub fn expired_watches(&self) -> u32 {
        self.lock().expired_watches
    }

    /// Compacts the history at a new version, as etcd does: open watches end with a
    /// `410 Gone` ERROR event, and a watch from any version handed out so far is answered
    /// the same; a fresh list works again.
    pub fn forget_history(&self) {
        {
            let mut inner = self.lock();
            inner.history.clear();
            inner.resource_version += 1;
            inner.oldest_kept = inner.resource_version;
        }
        let _ = self.drops.send(true);
    }

    // ------------------------------------------------------------ semantics

    fn next_version(inner: &mut Inner) -> u64 {
        inner.resource_version += 1;
        inner.resource_version
    }

    fn record(&self, inner: &mut Inner, plural: &'static str, object: Value, rv: u64) {
        let change = Change {
            resource_version: rv,
            plural,
            object,
        };
        inner.history.push_back(change.clone());
        while inner.history.len() > inner.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.oldest_kept = dropped.resource_version;
            }
        }
        let _ = self.changes.send(change);
    }

    fn create(
        &self,
        plural: &str,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, (u16, String)> {
        let rt = resource(plural).ok_or((404, format!("the server does not serve {plural}")))?;
        if !object.is_object() {
            return Err((400, "the body is not an object".into()));
        }
        let mut inner = self.lock();
        let metadata = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
            .ok_or((400, "no metadata".to_string()))?;
        let name = match metadata["name"].as_str() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match metadata["generateName"].as_str() {
                Some(prefix) => {
                    inner.uid_counter += 1;
                    format!("{prefix}{:05x}", inner.uid_counter)
                }
                None => {
                    return Err((
                        422,
                        "metadata.name or metadata.generateName is required".into(),
                    ));
                }
            },
        };
        let key = (plural.to_string(), namespace.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err((409, format!("{plural} \"{name}\" already exists")));
        }
        inner.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", inner.uid_counter);
        let rv = Self::next_version(&mut inner);
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(namespace);
        metadata["uid"] = json!(uid);
        metadata["resourceVersion"] = json!(rv.to_string());
        metadata["generation"] = json!(1);
        metadata["creationTimestamp"] = json!(now());
        if let Some(meta) = metadata.as_object_mut() {
            meta.remove("deletionTimestamp");
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        if rt.has_status
            && let Some(o) = object.as_object_mut()
        {
            o.remove("status");
        }
        inner.objects.insert(key, object.clone());
        self.record(&mut inner, rt.plural, added(&object), rv);
        Ok(object)
    }

    /// Applies a write to an existing object under the subresource rules.
    fn write(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        write: Write,
        status: bool,
    ) -> Result<Value, (u16, String)> {
        let rt = resource(plural).ok_or((404, format!("the server does not serve {plural}")))?;
        let mut inner = self.lock();
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{plural} \"{name}\" not found")))?;
        let mut next = current.clone();
        match write {
            Write::Replace(body) => {
                let sent = body["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                if !sent.is_empty()
                    && sent
                        != current["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                {
                    return Err((
                        409,
                        format!(
                            "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    ));
                }
                next = body;
            }
            Write::JsonPatch(ops) => {
                for op in &ops {
                    // NB: as in the API server, `test` of a missing path against null passes
                    // (kube's finalizer helper tests `/metadata/finalizers` for null).
                    if let json_patch::PatchOperation::Test(test) = op
                        && test.value.is_null()
                        && test.path.resolve(&next).is_err()
                    {
                        continue;
                    }
                    json_patch::patch(&mut next, std::slice::from_ref(op))
                        .map_err(|e| (422, format!("the JSON patch cannot be applied: {e}")))?;
                }
            }
            Write::Merge(patch) => json_patch::merge(&mut next, &patch),
            Write::ApplyStatus(patch) => next["status"] = patch["status"].clone(),
            Write::Status(value) => next["status"] = value,
        }
        // Subresource rules: /status writes only the status; the object never does.
        if rt.has_status {
            if status {
                let new_status = next["status"].clone();
                next = current.clone();
                next["status"] = new_status;
            } else {
                match current.get("status") {
                    Some(old) => next["status"] = old.clone(),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
        }
        // Fields the server owns.
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "generation",
        ] {
            match current["metadata"].get(field) {
                Some(value) => next["metadata"][field] = value.clone(),
                None => {
                    if let Some(meta) = next["metadata"].as_object_mut() {
                        meta.remove(field);
                    }
                }
            }
        }
        next["apiVersion"] = json!(rt.api_version());
        next["kind"] = json!(rt.kind);
        if without_meta_status(&next) != without_meta_status(&current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == current {
            return Ok(current);
        }
        let rv = Self::next_version(&mut inner);
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        let deleting = next["metadata"].get("deletionTimestamp").is_some();
        let finalizers_left = next["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            inner.objects.remove(&key);
            self.record(&mut inner, rt.plural, deleted(&next), rv);
            let uid = next["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            drop(inner);
            self.cascade(&uid);
            return Ok(next);
        }
        inner.objects.insert(key, next.clone());
        self.record(&mut inner, rt.plural, modified(&next), rv);
        Ok(next)
    }

    fn remove(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, (u16, String)> {
        let rt = resource(plural).ok_or((404, format!("the server does not serve {plural}")))?;
        let mut inner = self.lock();
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        let mut object = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or((404, format!("{plural} \"{name}\" not found")))?;
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let rv = Self::next_version(&mut inner);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if has_finalizers {
            if object["metadata"].get("deletionTimestamp").is_none() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                inner.objects.insert(key, object.clone());
                self.record(&mut inner, rt.plural, modified(&object), rv);
            }
            return Ok(object);
        }
        inner.objects.remove(&key);
        self.record(&mut inner, rt.plural, deleted(&object), rv);
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        drop(inner);
        self.cascade(&uid);
        Ok(object)
    }

    /// Background garbage collection: dependents of a deleted owner go too.
    fn cascade(&self, owner_uid: &str) {
        let dependents: Vec<(String, String, String)> = self
            .lock()
            .objects
            .iter()
            .filter(|(_, object)| {
                object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for (plural, namespace, name) in dependents {
            let _ = self.remove(&plural, &namespace, &name);
        }
    }

    fn take_fault(&self, method: &Method, plural: &str) -> Option<u16> {
        let mut inner = self.lock();
        let fault = inner
            .faults
            .iter_mut()
            .find(|f| f.method == *method && f.plural == plural && f.remaining > 0)?;
        fault.remaining -= 1;
        Some(fault.code)
    }
}

enum Write {
    Replace(Value),
    JsonPatch(Vec<json_patch::PatchOperation>),
    Merge(Value),
    ApplyStatus(Value),
    Status(Value),
}

fn without_meta_status(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    copy
}

fn added(object: &Value) -> Value {
    json!({"type": "ADDED", "object": object})
}

fn modified(object: &Value) -> Value {
    json!({"type": "MODIFIED", "object": object})
}

fn deleted(object: &Value) -> Value {
    json!({"type": "DELETED", "object": object})
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn status_body(code: u16, message: &str) -> Value {
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 if message.contains("already exists") => "AlreadyExists",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    };
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn error(code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(status_body(code, message))).into_response()
}

/// A request path, taken apart.
#[derive(Debug)]
struct Target {
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some(namespace.to_string()), rest)
        }
        rest => (None, rest),
    };
    match rest {
        [plural] => Some(Target {
            plural: plural.to_string(),
            namespace,
            name: None,
            subresource: None,
        }),
        [plural, name] => Some(Target {
            plural: plural.to_string(),
            namespace,
            name: Some(name.to_string()),
            subresource: None,
        }),
        [plural, name, sub] => Some(Target {
            plural: plural.to_string(),
            namespace,
            name: Some(name.to_string()),
            subresource: Some(sub.to_string()),
        }),
        _ => None,
    }
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a label selector.
fn label_matches(selector: &str, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    split_selector(selector).iter().all(|requirement| {
        let requirement = requirement.trim();
        if let Some((key, values)) = requirement.split_once(" in ") {
            let values = values.trim().trim_start_matches('(').trim_end_matches(')');
            return label(key.trim()).is_some_and(|v| values.split(',').any(|x| x.trim() == v));
        }
        if let Some((key, values)) = requirement.split_once(" notin ") {
            let values = values.trim().trim_start_matches('(').trim_end_matches(')');
            return !label(key.trim()).is_some_and(|v| values.split(',').any(|x| x.trim() == v));
        }
        if let Some((key, value)) = requirement.split_once("!=") {
            return label(key.trim()) != Some(value.trim());
        }
        if let Some((key, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            return label(key.trim()) == Some(value.trim());
        }
        if let Some(key) = requirement.strip_prefix('!') {
            return label(key.trim()).is_none();
        }
        requirement.is_empty() || label(requirement).is_some()
    })
}

/// Splits on commas outside parentheses.
fn split_selector(selector: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

fn field_matches(selector: &str, object: &Value) -> bool {
    split_selector(selector).iter().all(|requirement| {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            return true;
        }
        let (key, value, equal) = match requirement.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match requirement
                .split_once("==")
                .or_else(|| requirement.split_once('='))
            {
                Some((k, v)) => (k, v, true),
                None => return false,
            },
        };
        let actual = match key.trim() {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            _ => None,
        };
        (actual == Some(value.trim())) == equal
    })
}

fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    query
        .get("labelSelector")
        .is_none_or(|s| label_matches(s, &object["metadata"]["labels"]))
        && query
            .get("fieldSelector")
            .is_none_or(|s| field_matches(s, object))
}

async fn handle(
    State(fake): State<FakeApiServer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let response = answer(&fake, &method, &uri, &content_type, &body).await;
    fake.lock().requests.push(Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type,
        status: response.status().as_u16(),
    });
    response
}

async fn answer(
    fake: &FakeApiServer,
    method: &Method,
    uri: &Uri,
    content_type: &str,
    body: &Bytes,
) -> Response {
    let Some(target) = parse_path(uri.path()) else {
        return error(
            404,
            &format!("the fake API server does not serve {}", uri.path()),
        );
    };
    let Some(rt) = resource(&target.plural) else {
        return error(
            404,
            &format!(
                "the server could not find the requested resource ({})",
                target.plural
            ),
        );
    };
    if let Some(code) = fake.take_fault(method, &target.plural) {
        return error(code, "an injected fault");
    }
    let query = query_map(uri);
    let namespace = target.namespace.clone().unwrap_or_default();
    let parse_body =
        || serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not JSON: {e}"));
    let status_sub = target.subresource.as_deref() == Some("status");
    let reply = |outcome: Result<Value, (u16, String)>, created: bool| match outcome {
        Ok(object) => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(object)).into_response()
        }
        Err((code, message)) => error(code, &message),
    };
    match (
        method.clone(),
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, _) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(fake, rt, target.namespace.as_deref(), &query)
        }
        (Method::GET, None, _) => list(fake, rt, target.namespace.as_deref(), &query),
        (Method::GET, Some(name), Some("log")) if rt.plural == "pods" => {
            match fake.lock().logs.get(&(namespace.clone(), name.to_string())) {
                Some(text) => (StatusCode::OK, text.clone()).into_response(),
                None => match fake.object("pods", &namespace, name) {
                    Some(_) => (StatusCode::OK, String::new()).into_response(),
                    None => error(404, &format!("pods \"{name}\" not found")),
                },
            }
        }
        (Method::GET, Some(name), None | Some("status")) => {
            match fake.object(rt.plural, &namespace, name) {
                Some(object) => (StatusCode::OK, axum::Json(object)).into_response(),
                None => error(404, &format!("{} \"{name}\" not found", rt.plural)),
            }
        }
        (Method::POST, None, None) => match parse_body() {
            Ok(object) => reply(fake.create(rt.plural, &namespace, object), true),
            Err(message) => error(400, &message),
        },
        (Method::PUT, Some(name), None | Some("status")) => match parse_body() {
            Ok(object) => reply(
                fake.write(
                    rt.plural,
                    &namespace,
                    name,
                    Write::Replace(object),
                    status_sub,
                ),
                false,
            ),
            Err(message) => error(400, &message),
        },
        (Method::PATCH, Some(name), None | Some("status")) => {
            let media = content_type.split(';').next().unwrap_or_default().trim();
            let write = match media {
                "application/json-patch+json" => match serde_json::from_slice::<
                    Vec<json_patch::PatchOperation>,
                >(body)
                {
                    Ok(ops) => Write::JsonPatch(ops),
                    Err(e) => return error(400, &format!("the JSON patch does not parse: {e}")),
                },
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    match parse_body() {
                        Ok(patch) => Write::Merge(patch),
                        Err(message) => return error(400, &message),
                    }
                }
                "application/apply-patch+yaml" => {
                    if !query.contains_key("fieldManager") {
                        return error(422, "fieldManager is required for apply patch");
                    }
                    match parse_body() {
                        Ok(patch) if status_sub => Write::ApplyStatus(patch),
                        Ok(patch) => {
                            if fake.object(rt.plural, &namespace, name).is_none() {
                                return reply(fake.create(rt.plural, &namespace, patch), true);
                            }
                            Write::Merge(patch)
                        }
                        Err(message) => return error(400, &message),
                    }
                }
                other => return error(415, &format!("the patch type {other:?} is not supported")),
            };
            reply(
                fake.write(rt.plural, &namespace, name, write, status_sub),
                false,
            )
        }
        (Method::DELETE, Some(name), None) => {
            reply(fake.remove(rt.plural, &namespace, name), false)
        }
        _ => error(405, &format!("{method} is not allowed on {}", uri.path())),
    }
}

fn list(
    fake: &FakeApiServer,
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response {
    let inner = fake.lock();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((plural, ns, _), _)| plural == rt.plural && namespace.is_none_or(|n| n == ns))
        .map(|(_, object)| object)
        .filter(|object| selected(object, query))
        .cloned()
        .collect();
    let body = json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": inner.resource_version.to_string()},
        "items": items,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn watch(
    fake: &FakeApiServer,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let namespace = namespace.map(str::to_string);
    let initial_query = query.clone();
    let query = query.clone();
    let matches = {
        let namespace = namespace.clone();
        move |change: &Change| {
            let object = &change.object["object"];
            change.plural == rt.plural
                && namespace
                    .as_deref()
                    .is_none_or(|n| object["metadata"]["namespace"].as_str() == Some(n))
                && selected(object, &query)
        }
    };
    // NB: subscribe and read the history under one lock, so no change falls between.
    let (replay, live, drops) = {
        let mut inner = fake.lock();
        if from != 0 && from < inner.oldest_kept {
            inner.expired_watches += 1;
            let gone = json!({"type": "ERROR", "object": status_body(410, &format!("too old resource version: {from} ({})", inner.oldest_kept))});
            return line_response(futures::stream::iter(vec![gone]).boxed());
        }
        let replay: Vec<Value> = if from == 0 {
            inner
                .objects
                .iter()
                .filter(|((plural, ns, _), _)| {
                    plural == rt.plural && namespace.as_deref().is_none_or(|n| n == ns)
                })
                .map(|(_, object)| object)
                .filter(|object| selected(object, &initial_query))
                .map(added)
                .collect()
        } else {
            inner
                .history
                .iter()
                .filter(|c| c.resource_version > from && matches(c))
                .map(|c| c.object.clone())
                .collect()
        };
        (replay, fake.changes.subscribe(), fake.drops.subscribe())
    };
    let expired = {
        let fake = fake.clone();
        move || {
            let mut inner = fake.lock();
            inner.expired_watches += 1;
            json!({"type": "ERROR", "object": status_body(410, &format!("too old resource version: {}", inner.oldest_kept))})
        }
    };
    let live = futures::stream::unfold(Some((live, drops, matches, expired)), |state| async move {
        let (mut live, mut drops, matches, expired) = state?;
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(change) if matches(&change) => return Some((change.object, Some((live, drops, matches, expired)))),
                    Ok(_) => continue,
                    // A watcher that fell behind is cut off; it resumes from its last version.
                    Err(_) => return None,
                },
                gone = drops.recv() => return match gone {
                    Ok(true) => Some((expired(), None)),
                    _ => None,
                },
            }
        }
    });
    let stream = futures::stream::iter(replay)
        .chain(live)
        .take_until(tokio::time::sleep(timeout));
    line_response(stream.boxed())
}

fn line_response(stream: futures::stream::BoxStream<'static, Value>) -> Response {
    let lines = stream.map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| error(500, "cannot build the watch response"))
}
