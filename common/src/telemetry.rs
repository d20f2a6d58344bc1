//! Logging for the binaries: `tracing` to stderr, filtered by `ASRL_LOG` (else `RUST_LOG`,
//! else the command's default), so stdout stays free for machine-readable output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Default filter of long-running commands (learner `train`, worker `run`): their progress at
/// info, the gRPC stack's chatter only when it matters.
pub const SERVICE_LOG: &str = "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,asrl::metrics=warn";

/// Installs the global subscriber with `warn` as the default; a second call is a no-op.
pub fn init_tracing() {
    init_tracing_with("warn");
}

/// Installs the global subscriber; `default` applies when neither `ASRL_LOG` nor `RUST_LOG` is
/// set. Colours only on a terminal, so log files stay plain text.
pub fn init_tracing_with(default: &str) {
    let filter = std::env::var("ASRL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and its causes as one line for a binary's `error: ...` message, skipping causes
/// whose text the message already contains (many errors print their source themselves).
pub fn one_line_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_error_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = crate::model::ModelError::Io { path: "/x/config.json".into(), source: io };
        assert_eq!(super::one_line_error(&e), "/x/config.json: no such file");
    }
}
