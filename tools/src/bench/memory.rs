//! Resident-memory figures of this process, for the benchmarks' peak-RSS lines.
//!
//! The process peak comes from `getrusage(RUSAGE_SELF).ru_maxrss`. On Linux the kernel's
//! high-water mark can also be reset (`/proc/self/clear_refs`), so a phase's own peak
//! (`VmHWM` after the reset) excludes what an earlier phase, like building the model, touched.

use std::path::Path;

const MIB: f64 = 1024.0 * 1024.0;

/// The largest resident set this process has had so far, in MiB (NaN where unknown).
#[cfg(unix)]
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let maxrss = usage.ru_maxrss as f64;
    // Linux and the BSDs report KiB, macOS bytes.
    if cfg!(target_os = "macos") {
        maxrss / MIB
    } else {
        maxrss / 1024.0
    }
}

#[cfg(not(unix))]
pub fn peak_rss_mib() -> f64 {
    f64::NAN
}

/// A field of /proc/self/status (`VmRSS:`, `VmHWM:`) in MiB; `None` off Linux.
fn status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The resident set now, in MiB (`None` off Linux).
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// Resets the high-water mark to the current resident set; false where that is not possible.
pub fn reset_peak() -> bool {
    let path = Path::new("/proc/self/clear_refs");
    path.exists() && std::fs::write(path, "5").is_ok()
}

/// The high-water mark since the last [`reset_peak`] (Linux), in MiB.
pub fn peak_since_reset_mib() -> Option<f64> {
    status_mib("VmHWM:")
}
