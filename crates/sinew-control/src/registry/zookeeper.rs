//! The ZooKeeper registry, as Dubbo uses it: each provider of an interface writes a node
//!
//! ```text
//! /dubbo/<interface>/providers/<url-encoded provider URL>
//! dubbo://10.0.0.7:20880/com.example.DemoService?version=1.0.0&weight=100&...
//! ```
//!
//! (ephemeral, so it goes with the provider's session). The interface is the service's
//! name; the URL's host and port are the instance's address; `weight` its weight; and
//! `version`, `group`, `application` and `zone` parameters its labels.
//!
//! It talks to ZooKeeper through the `zookeeper-client` crate, which speaks the
//! protocol, keeps the session alive and picks a server of the ensemble that answers. One persistent recursive watch on the root (ZooKeeper 3.6 and
//! later) tells of every node created or deleted under it, paths that do not exist yet
//! included, so nothing is polled: a change to the provider tree makes it read the tree
//! again. A lost connection or an expired session is replaced by a new session, with
//! a new watch and a full read (see [`wait_for_change`] for why).

use std::collections::BTreeMap;
use std::time::Duration;

use zookeeper_client::{
    AddWatchMode, Client, EventType, PersistentWatcher, SessionState, StateWatcher, WatchedEvent,
};

use super::{InstanceReporter, Reports};
use crate::services::Instance;

/// Asked of the server; it also bounds how long a silent server goes unnoticed (the
/// client pings at a third of it and gives a connection up after two thirds).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Events that arrive this close together are taken in one read: a provider restarting
/// with several interfaces, or many providers at once.
const COALESCE: Duration = Duration::from_millis(20);

/// Follows `root` (normally `/dubbo`) on the ensemble `servers` (`host:port` each).
pub async fn watch(servers: Vec<String>, root: String, reports: Reports) {
    let source = format!("zookeeper {root}");
    let mut reporter = InstanceReporter::new(&source, &reports);
    let cluster = servers.join(",");
    let mut delay = Duration::from_millis(100);
    loop {
        match follow(&cluster, &root, &mut reporter, &mut delay).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(servers = %cluster, "zookeeper registry: {e}; retrying in {delay:?}")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One session. `Ok` only when the builder has gone away.
async fn follow(
    cluster: &str,
    root: &str,
    reporter: &mut InstanceReporter<'_>,
    delay: &mut Duration,
) -> Result<(), String> {
    // The client gives up with `Timeout` after about a session timeout with no server.
    let client = Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .connect(cluster)
        .await
        .map_err(|e| format!("no session: {e}"))?;
    let mut state = client.state_watcher();
    let mut watcher = client
        .watch(root, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| match e {
            zookeeper_client::Error::Unimplemented => {
                "the server cannot watch recursively: ZooKeeper 3.6 or later is needed".into()
            }
            e => format!("watching {root}: {e}"),
        })?;
    *delay = Duration::from_millis(100);
    loop {
        let services = read(&client, root)
            .await
            .map_err(|e| format!("reading {root}: {e}"))?;
        if !reporter.report(services) {
            return Ok(());
        }
        wait_for_change(&mut watcher, &mut state, root).await?;
    }
}

/// Every provider under `root`, by interface. A path that does not exist has none.
async fn read(
    client: &Client,
    root: &str,
) -> Result<BTreeMap<String, Vec<Instance>>, zookeeper_client::Error> {
    let mut services: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for interface in children(client, root).await? {
        let providers = format!("{root}/{interface}/providers");
        for node in children(client, &providers).await? {
            match provider(&node) {
                Some(instance) => services
                    .entry(interface.clone())
                    .or_default()
                    .push(instance),
                None => tracing::warn!(node = %node, "zookeeper registry: not a provider URL"),
            }
        }
    }
    Ok(services)
}

async fn children(client: &Client, path: &str) -> Result<Vec<String>, zookeeper_client::Error> {
    match client.list_children(path).await {
        Err(zookeeper_client::Error::NoNode) => Ok(Vec::new()),
        other => other,
    }
}

/// Returns once the provider tree may have changed (and a short while after, to take a
/// burst in one read); an error once the connection is lost or the session has ended.
///
/// A lost connection ends the session here, although the client could resume it on
/// another server: after a server restart, the client (0.11.2, with ZooKeeper 3.8.0)
/// resumed the session but the persistent watch sent no more events, so the registry
/// missed every later change. A new session sets its watch anew and reads everything.
async fn wait_for_change(
    watcher: &mut PersistentWatcher,
    state: &mut StateWatcher,
    root: &str,
) -> Result<(), String> {
    loop {
        tokio::select! {
            event = watcher.changed() => if matters(&event, root)? { break },
            now = state.changed() => connected(now)?,
        }
    }
    let until = tokio::time::Instant::now() + COALESCE;
    loop {
        tokio::select! {
            event = watcher.changed() => { matters(&event, root)?; }
            now = state.changed() => connected(now)?,
            _ = tokio::time::sleep_until(until) => return Ok(()),
        }
    }
}

/// An error unless the session is connected.
fn connected(state: SessionState) -> Result<(), String> {
    match state {
        SessionState::SyncConnected | SessionState::ConnectedReadOnly => Ok(()),
        SessionState::Disconnected => Err("the connection was lost".into()),
        ended => Err(format!("the session ended: {ended}")),
    }
}

/// Whether `event` calls for a new read; an error when the connection is lost or the
/// session is over (the watcher must not be asked again then).
fn matters(event: &WatchedEvent, root: &str) -> Result<bool, String> {
    match event.event_type {
        EventType::Session => connected(event.session_state).map(|()| true),
        EventType::NodeCreated | EventType::NodeDeleted => Ok(in_provider_tree(&event.path, root)),
        // Node data is not read, and children changes come as created/deleted here.
        EventType::NodeDataChanged | EventType::NodeChildrenChanged => Ok(false),
    }
}

/// `root`, an interface, its `providers`, or a provider: not `consumers`, `routers`...
fn in_provider_tree(path: &str, root: &str) -> bool {
    let Some(rest) = path.strip_prefix(root) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/');
    let _interface = segments.next();
    matches!(segments.next(), None | Some("providers"))
}

/// A provider node's name as an instance: `dubbo%3A%2F%2F10.0.0.7%3A20880%2F...`.
pub fn provider(node: &str) -> Option<Instance> {
    let url = percent_decode(node)?;
    let (_, rest) = url.split_once("://")?;
    let (authority, path_and_query) = rest.split_once('/').unwrap_or((rest, ""));
    let address: std::net::SocketAddr = authority.parse().ok()?;
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let mut labels = BTreeMap::new();
    let mut weight = 1;
    for pair in query.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key {
            "weight" => weight = value.parse().ok().filter(|w| *w > 0)?,
            "version" | "group" | "application" | "zone" if !value.is_empty() => {
                labels.insert(key.to_string(), value.to_string());
            }
            _ => {}
        }
    }
    Some(Instance {
        address: address.to_string(),
        labels,
        weight,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_provider_tree_calls_for_a_read() {
        for path in [
            "/dubbo",
            "/dubbo/com.example.DemoService",
            "/dubbo/com.example.DemoService/providers",
            "/dubbo/com.example.DemoService/providers/dubbo%3A%2F%2F10.0.0.7%3A1",
        ] {
            assert!(in_provider_tree(path, "/dubbo"), "{path}");
        }
        for path in [
            "/dubbox",
            "/other",
            "/dubbo/com.example.DemoService/consumers",
            "/dubbo/com.example.DemoService/consumers/consumer%3A%2F%2F10.0.0.8",
            "/dubbo/com.example.DemoService/configurators",
        ] {
            assert!(!in_provider_tree(path, "/dubbo"), "{path}");
        }
    }

    #[test]
    fn a_dubbo_provider_url_is_an_instance_with_its_labels_and_weight() {
        let node = "dubbo%3A%2F%2F10.0.0.7%3A20880%2Fcom.example.DemoService%3Fanyhost%3Dtrue%26application%3Ddemo%26version%3D1.0.0%26weight%3D50%26methods%3DsayHello";
        let i = provider(node).unwrap();
        assert_eq!(i.address, "10.0.0.7:20880");
        assert_eq!(i.weight, 50);
        assert_eq!(i.labels["version"], "1.0.0");
        assert_eq!(i.labels["application"], "demo");
        assert!(!i.labels.contains_key("methods"));
        assert!(provider("not-a-url").is_none());
        assert!(
            provider("dubbo%3A%2F%2Fhost-name%3A1%2Fx").is_none(),
            "names are not resolved"
        );
    }
}
