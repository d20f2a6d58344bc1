//! Ctrl-C and SIGTERM as one "please stop" signal for the long-running binaries.
//!
//! Both matter: a terminal sends SIGINT, while scripts and service managers send SIGTERM, and a
//! process started in the background by a non-interactive shell ignores SIGINT.

/// Completes when the process receives SIGINT or (on Unix) SIGTERM.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
