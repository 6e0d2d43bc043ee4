//! The etcd registry. Instances register themselves under a key prefix, each key with
//! a lease so that an instance that dies disappears when its lease expires:
//!
//! ```text
//! <prefix><service>/<instance id>  =  {"address": "10.0.0.7:8080", "labels": {"version": "v2"}, "weight": 1}
//! ```
//!
//! It reads the prefix, then watches it from the revision it read, through etcd's own
//! JSON gateway for the v3 API (`/v3/kv/range`, `/v3/watch`): plain HTTP/1.1 with
//! hyper, so no protobuf compiler and no second gRPC stack are needed. A broken watch
//! starts over with a fresh read, on the next endpoint, after a backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{Report, Reports};
use crate::services::Instance;

/// Follows `prefix` on the first of `endpoints` that answers, until the builder goes.
pub async fn watch(endpoints: Vec<String>, prefix: String, reports: Reports) {
    let source = format!("etcd {prefix}");
    let mut attempt = 0usize;
    let mut delay = Duration::from_millis(100);
    loop {
        let endpoint = &endpoints[attempt % endpoints.len()];
        match follow(endpoint, &prefix, &source, &reports, &mut delay).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint, "etcd registry: {e}; retrying in {delay:?}")
            }
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One read-then-watch session. `Ok` only when the builder has gone away.
async fn follow(
    endpoint: &str,
    prefix: &str,
    source: &str,
    reports: &Reports,
    delay: &mut Duration,
) -> Result<(), String> {
    let authority = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let range = json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))});
    let body = post(&authority, "/v3/kv/range", &range).await?;
    let response = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let read: Value =
        serde_json::from_slice(&response).map_err(|e| format!("range answer: {e}"))?;
    let revision: i64 = read["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or("range answer has no revision")?;
    let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
    for kv in read["kvs"].as_array().into_iter().flatten() {
        if let Some((key, value)) = decode_kv(kv) {
            put(&mut instances, prefix, key, &value);
        }
    }
    if reports.send(report(source, prefix, &instances)).is_err() {
        return Ok(());
    }
    *delay = Duration::from_millis(100);

    let create = json!({"create_request": {
        "key": B64.encode(prefix),
        "range_end": B64.encode(prefix_end(prefix)),
        "start_revision": (revision + 1).to_string(),
    }});
    let mut body = post(&authority, "/v3/watch", &create).await?;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(format!("watch broke: {e}")),
            None => return Err("watch ended".into()),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        // The gateway writes one JSON object per line.
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let message: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let Some(error) = message.get("error") {
                return Err(format!("watch error: {error}"));
            }
            let events = message["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if events.is_empty() {
                continue;
            }
            for event in &events {
                let Some((key, value)) = decode_kv(&event["kv"]) else {
                    continue;
                };
                if event["type"] == "DELETE" {
                    instances.remove(&key);
                } else {
                    put(&mut instances, prefix, key, &value);
                }
            }
            if reports.send(report(source, prefix, &instances)).is_err() {
                return Ok(());
            }
        }
    }
}

/// The key's instance when its value parses; a bad value is logged and dropped.
fn put(instances: &mut BTreeMap<String, Instance>, prefix: &str, key: String, value: &[u8]) {
    let Some((service, _)) = key.strip_prefix(prefix).and_then(|k| k.split_once('/')) else {
        tracing::warn!(key = %key, "etcd registry: keys are {prefix}<service>/<instance>");
        return;
    };
    if service.is_empty() {
        return;
    }
    match serde_json::from_slice::<Instance>(value) {
        Ok(instance) => {
            instances.insert(key, instance);
        }
        Err(e) => {
            tracing::warn!(key = %key, "etcd registry: not an instance: {e}");
            instances.remove(&key);
        }
    }
}

fn report(source: &str, prefix: &str, instances: &BTreeMap<String, Instance>) -> Report {
    let mut services: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for (key, instance) in instances {
        if let Some((service, _)) = key.strip_prefix(prefix).and_then(|k| k.split_once('/')) {
            services
                .entry(service.to_string())
                .or_default()
                .push(instance.clone());
        }
    }
    Report::Instances {
        source: source.to_string(),
        services,
    }
}

fn decode_kv(kv: &Value) -> Option<(String, Vec<u8>)> {
    let key = B64.decode(kv["key"].as_str()?).ok()?;
    let value = kv["value"]
        .as_str()
        .map_or(Ok(Vec::new()), |v| B64.decode(v))
        .ok()?;
    Some((String::from_utf8(key).ok()?, value))
}

/// The end of etcd's range for a prefix: the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

async fn post(authority: &str, path: &str, body: &Value) -> Result<hyper::body::Incoming, String> {
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| format!("connecting to {authority} timed out"))?
    .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{path} answered {}", response.status()));
    }
    Ok(response.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_byte() {
        assert_eq!(prefix_end("/sinew/"), b"/sinew0".to_vec());
    }

    #[test]
    fn keys_name_the_service_and_bad_values_are_dropped() {
        let mut instances = BTreeMap::new();
        put(
            &mut instances,
            "/s/",
            "/s/reviews/1".into(),
            br#"{"address": "127.0.0.1:1"}"#,
        );
        put(&mut instances, "/s/", "/s/reviews/2".into(), b"not json");
        put(
            &mut instances,
            "/s/",
            "/s/loose".into(),
            br#"{"address": "127.0.0.1:2"}"#,
        );
        let Report::Instances { services, .. } = report("etcd", "/s/", &instances) else {
            panic!()
        };
        assert_eq!(services["reviews"].len(), 1);
        assert_eq!(services.len(), 1);
    }
}
