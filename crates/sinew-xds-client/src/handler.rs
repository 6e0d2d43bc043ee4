//! What the client hands over: one response's resources of one type, and the seam where
//! the proxy maps them into its config and says yes or no.

use std::future::Future;
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;

use crate::type_url::Kind;

/// One resource of an update.
#[derive(Debug, Clone)]
pub struct UpdatedResource {
    /// The resource's name as the server gave it (delta), or None (state of the world:
    /// the name is inside the resource).
    pub name: Option<String>,
    pub resource: Any,
}

/// One accepted-or-rejected unit: a response's resources of one type.
#[derive(Debug, Clone)]
pub struct Update {
    pub kind: Kind,
    /// `version_info` (state of the world) or `system_version_info` (delta).
    pub version: String,
    pub resources: Vec<UpdatedResource>,
    /// Names the server removed (delta only).
    pub removed: Vec<String>,
    /// True for state of the world: for listeners and clusters `resources` is the whole
    /// set, so one not in it is gone. Endpoints and route configurations are asked for by
    /// name, and one missing from a response is unchanged (as in Envoy).
    pub complete: bool,
}

/// What happened to one stream's connection to a control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Connected; the stream opens on it.
    Connected,
    /// The connection could not be made (refused, timed out).
    Failed,
    /// A connected stream ended (the server went away, or the stream broke).
    Lost,
}

/// Turns updates into running config.
pub trait ResourceHandler: Send + 'static {
    /// Applies an update. `Err` is the NACK's message: it names the resource and the
    /// field, and the running config must stay as it was.
    fn apply(&mut self, update: Update) -> impl Future<Output = Result<(), String>> + Send;

    /// The endpoint (`ClusterLoadAssignment`) or route configuration names the accepted
    /// clusters and listeners refer to; the client subscribes to exactly these.
    fn wanted(&self, kind: Kind) -> Vec<String>;

    /// When the handler next needs [`ResourceHandler::expire`] without an update: the
    /// moment something waiting for a resource stops waiting (Envoy's
    /// `initial_fetch_timeout`). None: nothing is waiting with a time limit.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Called once `next_deadline` has passed, with no update.
    fn expire(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A stream's connection changed (for metrics); the client reconnects by itself.
    fn connection(&mut self, _event: Connection) {}
}

/// The `error_detail` of a NACK: gRPC's INVALID_ARGUMENT with the handler's message.
pub(crate) fn nack(message: String) -> envoy_types::pb::google::rpc::Status {
    envoy_types::pb::google::rpc::Status {
        code: 3,
        message,
        details: Vec::new(),
    }
}
