//! Adapter-push benchmark (see scripts/bench-adapter-push.sh).
//! Usage: asrl-bench-adapter-push [ITERATIONS]

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|_| anyhow::anyhow!("ITERATIONS must be a positive integer, got {s:?}"))?,
        None => 10,
    };
    let (payload, params) = asrl_learner::bench::qwen3_0_6b_r32()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(asrl_learner::bench::run_adapter_push(payload, params, iterations))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "adapter push (Qwen3-0.6B r=32, 7 modules): {} params, {} bytes ({:.1} MiB) over loopback, {} runs",
        report.params,
        report.payload_bytes,
        report.payload_bytes as f64 / (1 << 20) as f64,
        report.times.len()
    );
    println!(
        "first {:.1} ms, min {:.1} ms, median {:.1} ms, max {:.1} ms ({:.2} GB/s at median)",
        ms(report.times[0]),
        ms(report.min()),
        ms(report.median()),
        ms(report.max()),
        report.payload_bytes as f64 / report.median().as_secs_f64() / 1e9
    );
    Ok(())
}
