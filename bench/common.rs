//! What every Rust benchmark of bench/ shares: medians, peak memory, command-line numbers.

/// The median of `v` (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Peak resident memory of this process in MB (VmHWM), NaN where /proc is unavailable.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The value following `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// The number following `name` on the command line, or `default`.
pub fn arg_usize(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Whether the step `kind` ("train" or "infer") is to be timed: `--only train` or `--only infer`
/// times that one alone (for profiling); the other is reported as NaN.
pub fn wanted(kind: &str) -> bool {
    arg("--only").is_none_or(|only| only == kind)
}

/// Median wall time of `f` as [`timed_ms`] measures it when `kind` is [`wanted`], else NaN.
pub fn timed_if(
    kind: &str,
    warmup: usize,
    iters: usize,
    f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    if wanted(kind) {
        timed_ms(warmup, iters, f)
    } else {
        Ok(f64::NAN)
    }
}

/// Threads the run was given (RAYON_NUM_THREADS, set by bench/run.py; 0 when unset).
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
}

/// Median wall time in milliseconds of `f(i)` over `iters` calls, after `warmup` untimed ones.
pub fn timed_ms(warmup: usize, iters: usize, mut f: impl FnMut(usize) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t = std::time::Instant::now();
        f(i)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(times))
}

/// Prints the one JSON line bench/run.py reads.
pub fn report(model: &str, train_ms: f64, infer_ms: f64) {
    println!(
        "{}",
        serde_json::json!({"model": model, "threads": threads(), "train_ms": train_ms, "infer_ms": infer_ms, "peak_rss_mb": peak_rss_mb()})
    );
}
