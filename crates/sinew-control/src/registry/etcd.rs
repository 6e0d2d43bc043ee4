//! The etcd registry. Instances register themselves under a key prefix, each key with
//! a lease so that an instance that dies disappears when its lease expires:
//!
//! ```text
//! <prefix><service>/<instance id>  =  {"address": "10.0.0.7:8080", "labels": {"version": "v2"}, "weight": 1}
//! ```
//!
//! It reads the prefix, then watches it from the revision it read, over etcd's gRPC API
//! with the `etcd-client` crate (tonic, as the rest of the control plane). What it has
//! seen survives a broken connection: after a member restart or a failover it resumes
//! the watch from the next revision it has not seen, so nothing is read twice and
//! nothing is missed. Only when that revision has been compacted away (etcd answers
//! the watch with a compact revision and cancels it) does it read the whole prefix
//! again, since the changes in between are gone.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};

use super::{InstanceReporter, Reports};
use crate::services::Instance;

/// How long connecting to a member, or one read, may take before the next attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys per read: a page of typical instance values (~100 bytes) is a few hundred KiB.
const PAGE: i64 = 1000;
/// The largest gRPC message taken (tonic's default is 4 MiB): a page of values near
/// etcd's 1.5 MiB request limit, or a watch response after a long catch-up, is larger.
const MAX_MESSAGE: usize = 256 << 20;
/// HTTP/2 pings on the watch's connection: a member that stops answering without
/// closing the connection (a partition, a frozen host) is noticed within about
/// interval + timeout, and the registry moves on. Not more often than every 5 s: etcd
/// (`--grpc-keepalive-min-time`) answers pings that come faster with GOAWAY.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Follows `prefix` on the members `endpoints` (`http://host:port`), until the builder
/// goes.
pub async fn watch(endpoints: Vec<String>, prefix: String, reports: Reports) {
    let source = format!("etcd {prefix}");
    let mut reporter = InstanceReporter::new(&source, &reports);
    let mut known = Known::default();
    let mut delay = Duration::from_millis(100);
    loop {
        match follow(&endpoints, &prefix, &mut known, &mut reporter, &mut delay).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                endpoints = ?endpoints,
                "etcd registry: {e}; retrying in {delay:?}"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// What the registry has read, and up to which revision.
#[derive(Default)]
struct Known {
    /// By key.
    instances: BTreeMap<String, Instance>,
    /// The last revision seen; `None` until the prefix has been read, and again once a
    /// compaction has removed the history after it.
    revision: Option<i64>,
}

/// One connection: read the prefix if needed, then watch. `Ok` only when the builder
/// has gone away.
async fn follow(
    endpoints: &[String],
    prefix: &str,
    known: &mut Known,
    reporter: &mut InstanceReporter<'_>,
    delay: &mut Duration,
) -> Result<(), String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    let client = within(Client::connect(endpoints, Some(options)), "connecting").await?;
    loop {
        let revision = match known.revision {
            Some(revision) => revision,
            None => {
                let revision = read_all(&client, prefix, &mut known.instances).await?;
                known.revision = Some(revision);
                if !reporter.report(services(prefix, &known.instances)) {
                    return Ok(());
                }
                revision
            }
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let mut stream = within(watch.watch(prefix, Some(options)), "starting the watch").await?;
        *delay = Duration::from_millis(100);
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Err("the watch ended".into()),
                Err(e) => return Err(format!("the watch broke: {e}")),
            };
            if response.compact_revision() > 0 {
                // The history after `revision` is gone: only a new read tells what
                // changed meanwhile.
                tracing::warn!(
                    revision,
                    compacted = response.compact_revision(),
                    "etcd registry: the watch fell behind a compaction; reading the prefix again"
                );
                known.revision = None;
                break;
            }
            if response.canceled() {
                return Err(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ));
            }
            if response.events().is_empty() {
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => put(&mut known.instances, prefix, kv.key(), kv.value()),
                    EventType::Delete => {
                        known
                            .instances
                            .remove(&String::from_utf8_lossy(kv.key()).into_owned());
                    }
                }
                known.revision = known.revision.max(Some(kv.mod_revision()));
            }
            if !reporter.report(services(prefix, &known.instances)) {
                return Ok(());
            }
        }
    }
}

/// Reads every key under `prefix` into `instances`, in pages read at one revision (a
/// registry of thousands of instances is more than one gRPC message may carry); that
/// revision.
async fn read_all(
    client: &Client,
    prefix: &str,
    instances: &mut BTreeMap<String, Instance>,
) -> Result<i64, String> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let end = prefix_end(prefix);
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = None;
    instances.clear();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let page = within(kv.get(from.clone(), Some(options)), "reading the prefix").await?;
        let header = page.header().ok_or("the range answer has no header")?;
        let revision = *revision.get_or_insert(header.revision());
        for kv in page.kvs() {
            put(instances, prefix, kv.key(), kv.value());
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(revision),
        }
    }
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

/// `operation`'s result, or an error once [`REQUEST_TIMEOUT`] has passed.
async fn within<T>(
    operation: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    what: &str,
) -> Result<T, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, operation)
        .await
        .map_err(|_| format!("{what} timed out after {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// The key's instance when its value parses; a bad value is logged and dropped.
fn put(instances: &mut BTreeMap<String, Instance>, prefix: &str, key: &[u8], value: &[u8]) {
    let key = String::from_utf8_lossy(key).into_owned();
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

/// The instances by service, as the builder takes them.
fn services(
    prefix: &str,
    instances: &BTreeMap<String, Instance>,
) -> BTreeMap<String, Vec<Instance>> {
    let mut services: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for (key, instance) in instances {
        if let Some((service, _)) = key.strip_prefix(prefix).and_then(|k| k.split_once('/')) {
            services
                .entry(service.to_string())
                .or_default()
                .push(instance.clone());
        }
    }
    services
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
            b"/s/reviews/1",
            br#"{"address": "127.0.0.1:1"}"#,
        );
        put(&mut instances, "/s/", b"/s/reviews/2", b"not json");
        put(
            &mut instances,
            "/s/",
            b"/s/loose",
            br#"{"address": "127.0.0.1:2"}"#,
        );
        let services = services("/s/", &instances);
        assert_eq!(services["reviews"].len(), 1);
        assert_eq!(services.len(), 1);
    }
}
