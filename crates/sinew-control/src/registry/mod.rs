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
    /// The mesh CA's trust bundle (PEM), sent to proxies as the SDS secret `ROOTCA`.
    TrustBundle { pem: String },
}

pub type Reports = mpsc::UnboundedSender<Report>;

/// Sends a registry's instances only when they differ from what it sent last. The etcd
/// and ZooKeeper registries keep one for their whole life, so a reconnection that reads
/// what was already reported sends nothing.
pub struct InstanceReporter<'a> {
    source: &'a str,
    reports: &'a Reports,
    last: Option<BTreeMap<String, Vec<Instance>>>,
}

impl<'a> InstanceReporter<'a> {
    pub fn new(source: &'a str, reports: &'a Reports) -> Self {
        InstanceReporter {
            source,
            reports,
            last: None,
        }
    }

    /// False when the builder has gone away.
    pub fn report(&mut self, services: BTreeMap<String, Vec<Instance>>) -> bool {
        if self.last.as_ref() == Some(&services) {
            return true;
        }
        let sent = self
            .reports
            .send(Report::Instances {
                source: self.source.to_string(),
                services: services.clone(),
            })
            .is_ok();
        self.last = Some(services);
        sent
    }
}
