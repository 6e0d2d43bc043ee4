//! Registries: where services and their instances come from. Each runs as a task and
//! reports whole states (never deltas) to the builder, tagged with its source, so a
//! registry that reconnects simply reports again.

pub mod directory;
pub mod etcd;
pub mod kubernetes;
pub mod zookeeper;

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use crate::services::{Instance, Resource};

/// What a registry knows now.
#[derive(Debug, Clone)]
pub enum Report {
    /// Services and listeners defined in files (the directory registry).
    Definitions {
        source: String,
        resources: Vec<Resource>,
    },
    /// Instances of services, by service name.
    Instances {
        source: String,
        services: BTreeMap<String, Vec<Instance>>,
    },
}

pub type Reports = mpsc::UnboundedSender<Report>;
