//! What the client's streams share and keep: the handler and the names and deadline it
//! publishes ([`Shared`]), what one stream remembers across reconnects ([`Remembered`]),
//! and how a stream ended ([`Outcome`]). The client creates them; the state-of-the-world
//! and delta streams use them, so neither stream kind needs the client that runs it.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::{watch, Mutex};

use crate::handler::ResourceHandler;
use crate::type_url::Kind;

/// The handler and what streams share through it.
pub(crate) struct Shared<H> {
    pub handler: Mutex<H>,
    /// The names the handler wants, for the two by-name types.
    pub wanted: HashMap<Kind, watch::Sender<Vec<String>>>,
    /// The handler's next deadline, for the task that calls `expire`.
    pub deadline: watch::Sender<Option<Instant>>,
}

impl<H: ResourceHandler> Shared<H> {
    /// Publishes what the handler now wants and its next deadline; streams subscribed
    /// to those types, and the deadline task, see it.
    pub fn publish(&self, handler: &H) {
        self.deadline.send_if_modified(|current| {
            let next = handler.next_deadline();
            std::mem::replace(current, next) != next
        });
        for (kind, sender) in &self.wanted {
            let mut names = handler.wanted(*kind);
            names.sort();
            names.dedup();
            sender.send_if_modified(|current| {
                if *current == names {
                    false
                } else {
                    *current = names;
                    true
                }
            });
        }
    }
}

/// What one stream keeps across reconnects.
#[derive(Default)]
pub(crate) struct Remembered {
    /// Last accepted `version_info` per type (state of the world).
    pub versions: HashMap<Kind, String>,
    /// Last accepted version of each resource per type (delta's
    /// `initial_resource_versions`).
    pub resource_versions: HashMap<Kind, HashMap<String, String>>,
}

/// How a stream ended.
pub(crate) struct Outcome {
    /// At least one response arrived (the server was healthy for a while).
    pub delivered: bool,
    pub reason: String,
}
