//! Process signals for binaries: SIGTERM and SIGINT become a graceful stop.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. The handlers are registered before
/// this returns, so from then on a signal during start-up is a graceful stop, not a kill.
pub fn cancel_on_signals() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: shutting down gracefully");
        cancel.cancel();
    });
    Ok(token)
}
