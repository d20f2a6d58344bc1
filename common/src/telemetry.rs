//! Logging for the binaries: `tracing` to stderr, filtered by `ASRL_LOG` (else `RUST_LOG`,
//! else `warn`), so stdout stays free for machine-readable output.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call is a no-op.
pub fn init_tracing() {
    let filter = std::env::var("ASRL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
