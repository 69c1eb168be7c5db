//! `dbps orchestrator`: the rendezvous of a multi-machine run. Every rank registers with it
//! once at start-up and learns the others' addresses; gradients then flow between the ranks
//! directly, so the orchestrator carries no training traffic.

use std::net::TcpListener;

use crate::{AppError, Result};

/// Serves burn-collective's global orchestrator on `port` (every interface) until the process
/// is interrupted (Ctrl-C or SIGTERM).
///
/// A rank whose connection closes (it finished, or died) is forgotten, so the same
/// orchestrator serves a restarted run.
pub fn serve(port: u16) -> Result<()> {
    if port == 0 {
        return Err(AppError::Option {
            option: "--port",
            reason: "0 is not a port the ranks can be told; choose one, e.g. 3000".into(),
        });
    }
    // burn-collective logs a failed bind and returns; check first so that a taken port is an
    // error, not a silent exit.
    drop(
        TcpListener::bind(("0.0.0.0", port)).map_err(|e| AppError::Option {
            option: "--port",
            reason: format!("cannot listen on port {port} ({e}); choose a free port"),
        })?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Orchestrator(format!("cannot start its runtime ({e})")))?;
    tracing::info!(
        port,
        "orchestrator listening; start every rank with --orchestrator ws://THIS_HOST:{port}"
    );
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    tracing::info!("orchestrator stopped");
    Ok(())
}
