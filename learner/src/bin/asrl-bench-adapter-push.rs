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
    if iterations == 0 {
        anyhow::bail!("ITERATIONS must be a positive integer, got 0");
    }
    let (payload, params) = asrl_learner::bench::qwen3_0_6b_r32()?;
    let (copy_floor, hash_floor) = asrl_learner::bench::memory_floor(&payload, 5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(asrl_learner::bench::run_adapter_push(payload, params, iterations))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    const TARGET_MS: f64 = 100.0;
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
    println!(
        "not included above: parse into candle tensors, median {:.1} ms; reference on this machine: \
         copy into fresh memory {:.1} ms, XXH3-128 checksum {:.1} ms",
        ms(report.parse_median()),
        ms(copy_floor),
        ms(hash_floor)
    );
    let median = ms(report.median());
    println!(
        "adapter push median {median:.1} ms, target <= {TARGET_MS:.0} ms: {}",
        if median <= TARGET_MS { "met" } else { "NOT met" }
    );
    Ok(())
}
