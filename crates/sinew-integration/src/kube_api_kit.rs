//! A stand-in for a Kubernetes API server, for the Kubernetes registry's tests: no
//! cluster can run on the test machine, so this serves Services and EndpointSlices over
//! plain HTTP/1.1 in the shapes a real API server gives, starting from recorded-format
//! list responses (JSON fixtures), and takes changes from the test as watch events.
//!
//! It answers, for `services` (`/api/v1`) and `endpointslices`
//! (`/apis/discovery.k8s.io/v1`), at the cluster-wide path and the namespaced one
//! (`.../namespaces/<ns>/<resource>`):
//!
//! - a list (`GET` without `watch`): `{"kind": "<Kind>List", "apiVersion", "metadata":
//!   {"resourceVersion"}, "items"}`, items as a real server writes them (without their
//!   own `kind` and `apiVersion`), filtered by `labelSelector` (`key` and `key=value`
//!   terms);
//! - a watch (`watch=true`): a chunked response held open, one JSON event per line,
//!   `{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR", "object": ...}`.
//!   It starts after the request's `resourceVersion` (replaying the kept history), or,
//!   for a version older than the history kept, is a `410 Expired` `ERROR` event, after
//!   which a client must list again; with no version (or `0`) it starts with an `ADDED`
//!   per object, as a real server does.
//!
//! `limit` and `continue` are ignored (the fixtures are far below a page), and so is
//! `timeoutSeconds`: a watch stays open until the test ends it.
//!
//! Resource versions are one counter for everything, as in etcd. Every request's path
//! and query is recorded, so a test can see what the client asked.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The two resources served: (plural, API group path, kind).
const RESOURCES: [(&str, &str, &str); 2] = [
    ("services", "/api/v1", "Service"),
    (
        "endpointslices",
        "/apis/discovery.k8s.io/v1",
        "EndpointSlice",
    ),
];

pub struct KubeApi {
    /// `http://127.0.0.1:<port>`, for the registry's `api_server`.
    pub url: String,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[derive(Default)]
struct State {
    version: u64,
    /// Objects by resource (plural), then by (namespace, name).
    objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    /// Every event since `kept_from`, by resource: (version, type, object).
    history: BTreeMap<&'static str, Vec<(u64, String, Value)>>,
    /// A watch from a version older than this one is told `410 Expired`.
    kept_from: u64,
    watches: Vec<Watch>,
    requests: Vec<String>,
}

struct Watch {
    resource: &'static str,
    namespace: Option<String>,
    selector: Vec<(String, Option<String>)>,
    events: mpsc::UnboundedSender<Bytes>,
}

impl KubeApi {
    /// Serves the objects of two list responses (a `ServiceList` and an
    /// `EndpointSliceList`, as JSON); the current version is the larger of theirs.
    pub async fn start(service_list: &str, endpoint_slice_list: &str) -> KubeApi {
        let mut state = State::default();
        for (text, (resource, _, kind)) in [service_list, endpoint_slice_list]
            .into_iter()
            .zip(RESOURCES)
        {
            let list: Value = serde_json::from_str(text).expect("a list fixture is JSON");
            assert_eq!(list["kind"], format!("{kind}List"), "{list}");
            let version = version_of(&list["metadata"]);
            state.version = state.version.max(version);
            let objects = state.objects.entry(resource).or_default();
            for item in list["items"].as_array().expect("items") {
                objects.insert(key(item), item.clone());
            }
        }
        state.kept_from = state.version;
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        KubeApi {
            url: format!("http://{addr}"),
            state,
            accept,
        }
    }

    /// Applies one watch event, written as a real server streams it (`{"type",
    /// "object"}` with the object's `kind` and `apiVersion`): the object gets the next
    /// resource version, is stored or removed, and the event goes to every open watch
    /// that selects it.
    pub fn push(&self, event: &str) {
        let event: Value = serde_json::from_str(event).expect("an event fixture is JSON");
        let kind = event["type"].as_str().expect("type").to_string();
        let mut object = event["object"].clone();
        let resource = resource_of(&object);
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let objects = state.objects.entry(resource).or_default();
        match kind.as_str() {
            "ADDED" | "MODIFIED" => {
                objects.insert(key(&object), strip_type(&object));
            }
            "DELETED" => {
                objects.remove(&key(&object));
            }
            other => panic!("push ADDED, MODIFIED or DELETED, not {other}"),
        }
        state
            .history
            .entry(resource)
            .or_default()
            .push((version, kind.clone(), object.clone()));
        let line = event_line(&kind, resource, &object);
        state.watches.retain(|w| {
            w.resource != resource || !w.selects(&object) || w.events.send(line.clone()).is_ok()
        });
    }

    /// Changes an object the way it would change while no client was watching, with its
    /// history compacted away: every open watch is told `410 Expired` and ended, so only
    /// a new list shows the change.
    pub fn change_unwatched(&self, object: &str) {
        let mut object: Value = serde_json::from_str(object).expect("an object fixture is JSON");
        let resource = resource_of(&object);
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let object = strip_type(&object);
        state
            .objects
            .entry(resource)
            .or_default()
            .insert(key(&object), object);
        state.kept_from = state.version;
        state.history.clear();
        let line = expired(state.kept_from);
        for w in state.watches.drain(..) {
            let _ = w.events.send(line.clone());
        }
    }

    /// Sends a `BOOKMARK` at the current version to every open watch, as a real server
    /// does about once a minute to clients that allow them.
    pub fn bookmark(&self) {
        let state = self.state.lock().unwrap();
        let object = json!({"metadata": {"resourceVersion": state.version.to_string()}});
        for w in &state.watches {
            let _ = w.events.send(event_line("BOOKMARK", w.resource, &object));
        }
    }

    /// Watches open now on `resource` (`services` or `endpointslices`).
    pub fn watching(&self, resource: &str) -> usize {
        let mut state = self.state.lock().unwrap();
        state.watches.retain(|w| !w.events.is_closed());
        state
            .watches
            .iter()
            .filter(|w| w.resource == resource)
            .count()
    }

    /// Every request so far, as path and query.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Watch {
    fn selects(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        self.namespace
            .as_ref()
            .is_none_or(|ns| metadata["namespace"] == **ns)
            && selects(&self.selector, &metadata["labels"])
    }
}

fn selects(selector: &[(String, Option<String>)], labels: &Value) -> bool {
    selector.iter().all(|(k, v)| match v {
        Some(v) => labels[k] == **v,
        None => labels.get(k).is_some(),
    })
}

fn key(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

fn version_of(metadata: &Value) -> u64 {
    metadata["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("metadata.resourceVersion")
}

fn resource_of(object: &Value) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| object["kind"] == r.2)
        .unwrap_or_else(|| panic!("not a Service or EndpointSlice: {object}"))
        .0
}

fn api_version(resource: &str) -> &'static str {
    if resource == "services" {
        "v1"
    } else {
        "discovery.k8s.io/v1"
    }
}

/// An object as list items carry it: without its own `kind` and `apiVersion`.
fn strip_type(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

/// A watch event line; its object carries its `kind` and `apiVersion`.
fn event_line(kind: &str, resource: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": with_type(object, resource)})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn expired(current: u64) -> Bytes {
    let status = json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: older than {current}"),
            "reason": "Expired",
            "code": 410,
        },
    });
    let mut line = serde_json::to_vec(&status).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

type Body = BoxBody<Bytes, Infallible>;

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut state = state.lock().unwrap();
    state.requests.push(
        request
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
    );
    if request.method() != http::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "GET only",
        );
    }
    // `<group path>/<resource>` or `<group path>/namespaces/<ns>/<resource>`.
    let Some(((resource, _, kind), namespace)) = RESOURCES.iter().find_map(|r| {
        let rest = path.strip_prefix(r.1)?;
        if rest == format!("/{}", r.0) {
            return Some((*r, None));
        }
        let ns = rest
            .strip_prefix("/namespaces/")?
            .strip_suffix(&format!("/{}", r.0))?;
        (!ns.is_empty() && !ns.contains('/')).then(|| (*r, Some(ns.to_string())))
    }) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let selector: Vec<(String, Option<String>)> = match query.get("labelSelector") {
        None => Vec::new(),
        Some(s) => {
            let mut terms = Vec::new();
            for term in s.split(',').filter(|t| !t.is_empty()) {
                match term.split_once('=') {
                    Some((k, v)) if !k.ends_with('!') => {
                        terms.push((k.to_string(), Some(v.trim_start_matches('=').into())))
                    }
                    None if !term.contains(['!', '(', ' ']) => terms.push((term.to_string(), None)),
                    _ => {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            &format!("this test server only knows `key` and `key=value` selectors, not {term:?}"),
                        )
                    }
                }
            }
            terms
        }
    };
    let watch = Watch {
        resource,
        namespace,
        selector,
        events: mpsc::unbounded_channel().0,
    };
    let current: Vec<&Value> = state
        .objects
        .get(resource)
        .into_iter()
        .flat_map(|o| o.values())
        .filter(|o| watch.selects(o))
        .collect();

    if query.get("watch").map(String::as_str) != Some("true") {
        return json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{kind}List"),
                "apiVersion": api_version(resource),
                "metadata": {"resourceVersion": state.version.to_string()},
                "items": current,
            }),
        );
    }

    let (events, rx) = mpsc::unbounded_channel();
    let from = query.get("resourceVersion").map(String::as_str);
    match from {
        None | Some("" | "0") => {
            for object in current {
                let _ = events.send(event_line("ADDED", resource, object));
            }
        }
        Some(v) => match v.parse::<u64>() {
            Ok(v) if v >= state.kept_from => {
                for (version, kind, object) in state.history.get(resource).into_iter().flatten() {
                    if *version > v && watch.selects(object) {
                        let _ = events.send(event_line(kind, resource, object));
                    }
                }
            }
            Ok(_) => {
                // Too old: the client must list again. The stream ends after this.
                let _ = events.send(expired(state.kept_from));
                drop(events);
                return stream(rx);
            }
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("resourceVersion {v:?} is not a number"),
                )
            }
        },
    }
    state.watches.push(Watch { events, ..watch });
    stream(rx)
}

fn with_type(object: &Value, resource: &str) -> Value {
    let mut object = object.clone();
    let (_, _, kind) = RESOURCES.iter().find(|r| r.0 == resource).unwrap();
    object["kind"] = json!(kind);
    object["apiVersion"] = json!(api_version(resource));
    object
}

/// A chunked JSON response that carries what `rx` gets, until its senders are gone.
fn stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}

/// Percent-decoding of a query component (`+` is a space, as form encoding writes it).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
