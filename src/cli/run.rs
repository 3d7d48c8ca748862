//! `serial2mqtt run`: the daemon. Loads the config, starts logging (the journal under systemd)
//! and the runtime, runs the gateway until SIGTERM or SIGINT, and hands it each config a SIGHUP
//! loads, once checked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::load_or_report;
use crate::config::{self, Config};
use crate::recent::Recent;
use crate::{gateway, systemd};

/// Runs the gateway from the config at `path`.
pub fn main(path: PathBuf) -> ExitCode {
    let Some(config) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    // The dashboard's record exists before the log, so that it keeps the first lines too.
    let recent = config.web.as_ref().map(|_| Arc::new(Recent::default()));
    systemd::init_logging(&config.log_level, recent.clone());
    let systemd = systemd::Systemd::from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("serial2mqtt")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_reloads(path.clone(), reload_tx, systemd));
        info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "serial2mqtt starting");
        gateway::run(config, shutdown, reloads, systemd, recent).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// On every SIGHUP, reads and validates the config file again and hands it to the gateway; a
/// config with errors is reported (file, line, what to write instead) and the running one kept.
async fn watch_reloads(
    path: PathBuf,
    gateway: tokio::sync::mpsc::Sender<Config>,
    systemd: systemd::Systemd,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGHUP, reloading is unavailable: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        info!(config = %path.display(), "SIGHUP received: reloading the config");
        systemd.reloading();
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&p)).await;
        match loaded {
            Ok(Ok(new)) => {
                for w in &new.warnings {
                    warn!("{}", w.render(&new.source, "warning"));
                }
                if gateway.send(new).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                error!("reload rejected, the running config stays in effect:\n{e}");
                systemd.ready(
                    "reload rejected: config error (see the journal); running the previous config",
                );
            }
            Err(e) => error!("reload failed: {e}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM: the one way the daemon is asked to stop.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}
