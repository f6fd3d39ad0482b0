//! Hot reload: re-read the API definitions off the request path and swap the routing table in.
//!
//! Requests to reload are queued and coalesced: however many arrive while one reload runs,
//! the next reload serves them all. In-flight requests finish on the table they started with.

use std::sync::Arc;

use tokio::sync::mpsc;
use tollgate_config::GatewayConfig;
use tollgate_definitions::load_dir;
use tollgate_proxy::{Gateway, ReloadRequest, Routes};

/// Loads every definition in `app_path` and compiles a routing table. Broken files are logged
/// with their name and reason and left out.
///
/// # Errors
/// The folder itself cannot be read.
pub(crate) fn load_routes(config: &GatewayConfig) -> std::io::Result<Routes> {
    let outcome = load_dir(&config.app_path)?;
    for err in &outcome.errors {
        tracing::error!("skipped {err}");
    }
    for api in outcome.apis.iter().filter(|a| !a.spec.active) {
        tracing::info!(api_id = %api.spec.api_id, "API is inactive (active: false); not served");
    }
    Ok(Routes::build(outcome.apis, config))
}

/// Drains reload requests until the gateway stops.
pub(crate) async fn reloader(
    gateway: Arc<Gateway>,
    mut rx: mpsc::UnboundedReceiver<ReloadRequest>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let config = Arc::clone(&gateway.config);
        let result = match tokio::task::spawn_blocking(move || load_routes(&config)).await {
            Ok(Ok(routes)) => {
                let count = routes.apis().len();
                gateway.swap_routes(routes);
                tracing::info!(
                    apis = count,
                    reason = batch[0].reason,
                    coalesced = batch.len(),
                    "reloaded"
                );
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %gateway.config.app_path.display(), "reload failed; keeping the current APIs");
                Err(format!(
                    "cannot read {}: {e}",
                    gateway.config.app_path.display()
                ))
            }
            Err(e) => Err(format!("reload task failed: {e}")),
        };
        for req in batch {
            if let Some(done) = req.done {
                let _ = done.send(result.clone());
            }
        }
    }
}
