//! Hot reload: re-read the API definitions off the request path and swap the routing table in.
//!
//! Requests to reload are queued and coalesced: however many arrive while one reload runs,
//! the next reload serves them all. In-flight requests finish on the table they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tollgate_config::GatewayConfig;
use tollgate_definitions::pg::PgApiStore;
use tollgate_definitions::{LoadOptions, MatchOptions, load_dir, load_rows};
use tollgate_proxy::{Gateway, ReloadError, ReloadRequest, Routes};
use tollgate_session::{Policy, PolicySet};

use crate::uptime::{Plan, Uptime};

/// The gateway-wide settings the definitions loader compiles every API with: endpoint
/// matching and upstream TLS.
pub(crate) fn load_options(config: &GatewayConfig) -> LoadOptions {
    let m = config.path_matching;
    LoadOptions {
        matching: MatchOptions {
            prefix: m.prefix,
            suffix: m.suffix,
            ignore_case: m.ignore_case,
        },
        upstream_tls: config.upstream_tls.clone(),
    }
}

/// Loads every definition (from `app_path`, or the database table) and compiles a routing
/// table, with the uptime checks of the loaded APIs: once the table is live, hand the plan
/// to [`Uptime::commit`]. Broken definitions are logged with their origin and reason and left
/// out.
///
/// # Errors
/// The folder or the database cannot be read.
pub(crate) async fn load_routes(
    config: &Arc<GatewayConfig>,
    db: Option<&PgApiStore>,
    uptime: &Uptime,
) -> anyhow::Result<(Routes, Plan)> {
    let outcome = match db {
        Some(db) => load_rows(db.load().await?, &load_options(config)),
        None => {
            let cfg = Arc::clone(config);
            tokio::task::spawn_blocking(move || load_dir(&cfg.app_path, &load_options(&cfg)))
                .await
                .map_err(|e| anyhow::anyhow!("loading task failed: {e}"))?
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config.app_path.display()))?
        }
    };
    for err in &outcome.errors {
        tracing::error!("skipped {err}");
    }
    for api in outcome.apis.iter().filter(|a| !a.spec.active) {
        tracing::info!(api_id = %api.spec.api_id, "API is inactive (active: false); not served");
    }
    let plan = uptime.plan(&outcome.apis);
    let routes = Routes::build_with_health(outcome.apis, config, Some(plan.health()));
    Ok((routes, plan))
}

/// Reads the policies: the `policies.policy_path` folder when set, else the
/// `policies.policy_record_name` file (neither configured = no policies).
///
/// # Errors
/// The file or folder cannot be read, or the file is not an object of policies keyed by id.
pub(crate) fn load_policies(config: &GatewayConfig) -> anyhow::Result<PolicySet> {
    if let Some(dir) = &config.policy_dir {
        return load_policy_dir(dir);
    }
    let Some(file) = &config.policy_file else {
        return Ok(PolicySet::default());
    };
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "policies file {} (policies.policy_record_name)",
            file.display()
        )
    })?;
    PolicySet::from_record_json(&text).with_context(|| {
        format!(
            "policies file {}: not an object of policies keyed by id",
            file.display()
        )
    })
}

/// Every `*.json` file of `dir`, each one policy; its `id`, else the file name without
/// `.json`, names it. A file that is not a policy is skipped with a log line naming it, and
/// the others load.
fn load_policy_dir(dir: &Path) -> anyhow::Result<PolicySet> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("policies folder {} (policies.policy_path)", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut policies = Vec::with_capacity(files.len());
    for file in files {
        let read = std::fs::read_to_string(&file)
            .map_err(anyhow::Error::from)
            .and_then(|text| Ok(Policy::from_json(&text)?));
        match read {
            Ok(mut policy) => {
                if policy.id.trim().is_empty() {
                    policy.id = file
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                }
                policies.push(policy);
            }
            Err(e) => tracing::error!(file = %file.display(), error = %e, "policy file skipped"),
        }
    }
    Ok(PolicySet::new(policies))
}

/// Drains reload requests until the gateway stops; each reload also gives the uptime checker
/// the reloaded APIs' checks.
pub(crate) async fn reloader(
    gateway: Arc<Gateway>,
    mut rx: mpsc::UnboundedReceiver<ReloadRequest>,
    mut uptime: Uptime,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = reload_once(&gateway, &mut uptime, batch[0].reason, batch.len()).await;
        for req in batch {
            if let Some(done) = req.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// One reload: policies, then API definitions. A part that fails to load keeps its current
/// version; the reload reports failure only when the API folder cannot be read.
async fn reload_once(
    gateway: &Gateway,
    uptime: &mut Uptime,
    reason: &'static str,
    coalesced: usize,
) -> Result<(), ReloadError> {
    let config = Arc::clone(&gateway.config);
    let policies = tokio::task::spawn_blocking(move || load_policies(&config))
        .await
        .map_err(ReloadError::failed)?;
    match policies {
        Ok(set) => {
            let count = set.len();
            gateway.sessions.set_policies(set).await;
            tracing::info!(policies = count, "policies loaded");
        }
        Err(e) => tracing::error!("{e:#}; keeping the current policies"),
    }
    if let Some(tls) = gateway.tls.clone() {
        // Read off the runtime: certificate files are small, but a slow disk must not stall it.
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(n)) => tracing::info!(certificates = n, "TLS certificates loaded"),
            Ok(Err(e)) => tracing::error!("{e}; keeping the current TLS certificates"),
            Err(e) => tracing::error!(error = %e, "TLS certificate reload failed"),
        }
    }
    match load_routes(&gateway.config, gateway.api_db.as_deref(), uptime).await {
        Ok((routes, plan)) => {
            let count = routes.apis().len();
            gateway.swap_routes(routes);
            // After the swap: until now the old checks kept the old table current.
            uptime.commit(plan);
            tracing::info!(apis = count, reason, coalesced, "reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the current APIs");
            Err(ReloadError::failed(e))
        }
    }
}
