//! Filesystem xDS: a bootstrap's `dynamic_resources` that take listeners and clusters
//! from files (`path_config_source`). Each file is read at start (clusters first) and
//! again whenever it, or its `watched_directory`, changes — a file written in place, or
//! moved in over it as Envoy's docs advise. A change is checked first with every file
//! and the static config, as `sinew validate` checks them
//! ([`sinew_xds::resource_file::check`]): a file that does not parse or map, or that
//! leaves a listener routing to a cluster no file defines, is logged (file, line, column
//! and field), counted as a rejected update, and the last good config keeps serving.
//! What passes goes through the same handler as a control plane's responses
//! ([`crate::xds::ProxyHandler`]).

use std::sync::Arc;
use std::time::Instant;

use sinew_config::Config;
use sinew_proxy::metrics::Metrics;

use sinew_tls::watch::{FileStamps, POLL_INTERVAL};
use sinew_xds::resource_file::{self, ResourceFile};
use sinew_xds_client::{Kind, ResourceHandler, Update, UpdatedResource};

use crate::xds::ProxyHandler;

/// One file being followed.
struct Followed {
    file: ResourceFile,
    kind: Kind,
    stamps: FileStamps,
}

/// Puts each file's resources in force (in order: clusters, then listeners), then
/// follows the files for as long as the returned task runs. An error at start names the
/// file and what is wrong; the proxy should not serve without what the files hold.
pub async fn start(
    mut handler: ProxyHandler,
    files: Vec<ResourceFile>,
    base: Config,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut followed = Vec::new();
    for file in files {
        let kind = Kind::from_type_url(file.type_url).expect("files hold listeners or clusters");
        let mut paths = vec![file.path.clone()];
        paths.extend(file.watched_directory.clone());
        // Stamped before the read, so a change made while it is read is read again.
        let stamps = FileStamps::new(paths);
        apply(&mut handler, &file, kind).await?;
        followed.push(Followed { file, kind, stamps });
    }
    let following = Following {
        handler,
        files: followed,
        base,
        metrics,
    };
    Ok(tokio::spawn(following.run()))
}

/// Reads `file` and applies what it holds; the error names the file.
async fn apply(handler: &mut ProxyHandler, file: &ResourceFile, kind: Kind) -> Result<(), String> {
    let read = resource_file::read(&file.path, file.type_url).map_err(|d| d.to_string())?;
    let version = read.version.clone();
    let update = Update {
        kind,
        version: read.version,
        resources: read
            .resources
            .into_iter()
            .map(|resource| UpdatedResource {
                name: None,
                resource,
            })
            .collect(),
        removed: Vec::new(),
        // A file holds the whole set: a listener or cluster no longer in it is removed.
        complete: true,
    };
    handler
        .apply(update)
        .await
        .map_err(|e| format!("{}: {e}", file.path))?;
    tracing::info!(
        file = %file.path,
        version = %version,
        kind = kind.short_name(),
        "filesystem xDS: resources from the file are in force"
    );
    Ok(())
}

/// The files, and what their changes are checked against and applied to.
struct Following {
    handler: ProxyHandler,
    files: Vec<Followed>,
    /// The static config, which the files' resources are checked with.
    base: Config,
    metrics: Arc<Metrics>,
}

impl Following {
    /// Looks at the files every [`POLL_INTERVAL`]; changed ones are checked with the
    /// rest and applied. Also serves what waits for an `initial_fetch_timeout` once it
    /// runs out.
    async fn run(mut self) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let changed: Vec<usize> = (0..self.files.len())
                .filter(|&i| self.files[i].stamps.changed())
                .collect();
            if !changed.is_empty() {
                self.apply_changed(&changed).await;
            }
            if self
                .handler
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                self.handler.expire().await;
            }
        }
    }

    /// Checks every file as they are now, then applies the changed ones in order
    /// (clusters before listeners, as at start).
    async fn apply_changed(&mut self, changed: &[usize]) {
        let started = Instant::now();
        let all: Vec<ResourceFile> = self.files.iter().map(|f| f.file.clone()).collect();
        if let Err(d) = resource_file::check(&all, &self.base) {
            for &i in changed {
                let kind = self.files[i].kind.short_name();
                self.metrics.xds_update(kind, false, started.elapsed());
            }
            tracing::warn!(
                error = %d,
                "filesystem xDS: a changed file is refused; the last good config keeps serving"
            );
            return;
        }
        for &i in changed {
            let (file, kind) = (&self.files[i].file, self.files[i].kind);
            if let Err(e) = apply(&mut self.handler, file, kind).await {
                tracing::warn!(
                    file = %file.path,
                    error = %e,
                    "filesystem xDS: the changed file is refused; the last good config keeps serving"
                );
            }
        }
    }
}
