//! # candle-zoo
//!
//! A model zoo of classic generative, domain-adaptation and sequence models on Candle.
//!
//! This crate bundles the workspace for applications and examples:
//!
//! - [`zoo_core`]: devices, seeded randomness, checkpoints, the weights manifest, verified hub
//!   downloads, the training kit and shared trainable layers;
//! - [`zoo_data`]: the data sets and reproducible batching;
//! - [`zoo_eval`]: the judge classifier, evaluation metrics and pictures;
//! - [`zoo_kernels`]: the CPU kernels (convolutions, linear layers, norms, fused cells) with
//!   their gradients;
//! - [`zoo_ebgan`]: the energy-based GAN and its GAN baseline;
//! - [`zoo_cgan`]: InfoGAN, AC-GAN and the MSGAN mode-seeking regulariser;
//! - [`zoo_dann`], [`zoo_ddc`]: domain adaptation by gradient reversal and by MMD, with the
//!   two-domain trainer and baselines;
//! - [`adaptation`]: the MNIST -> MNIST-M protocol shared by the `dann` and `ddc` binaries;
//! - [`demo`]: the gallery rendered by `zoo demo`.
//!
//! The `zoo` command-line tool lists, inspects, verifies and fetches the published checkpoints of
//! `weights-manifest.toml`; run `zoo --help` for its commands.

pub use zoo_cgan;
pub use zoo_core;
pub use zoo_dann;
pub use zoo_data;
pub use zoo_ddc;
pub use zoo_ebgan;
pub use zoo_eval;
pub use zoo_kernels;

/// Tunes the process for training and inference; every binary of the zoo calls it first thing
/// in `main`, before any other thread starts:
///
/// - The allocator (mimalloc, which every binary of the zoo uses) keeps freed memory for reuse
///   instead of handing it back to the kernel after a delay. A training step frees and allocates
///   the same large buffers every time; handing them back made the kernel zero fresh pages on
///   every step (about 90,000 page faults in 10 InfoGAN steps, against 2,000 with this). A purge
///   delay set through the `MIMALLOC_PURGE_DELAY` environment variable is left as it is.
/// - Candle's element-wise ops run on a pool of spinning threads of their own, beside the rayon
///   threads that the zoo's kernels and the matrix products use (`RAYON_NUM_THREADS`). On the
///   zoo's tensors the hand-offs to that pool cost more than they save: at two threads, DANN's
///   training step took 49.5 ms with the pool at one thread against 55.9 ms with two (medians
///   of 8 interleaved rounds), the GAN baseline's the same either way. So the pool gets one
///   thread unless `CANDLE_NUM_THREADS` is set.
pub fn tune_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Read once, when Candle first builds its pool, which is after this call.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // `mi_option_purge_delay` is option 15 in mimalloc 2 and 3; -1 never purges.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is a plain call into the linked allocator, made at start-up
    // before the program starts other threads.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

pub mod adaptation;
pub mod cli_args;
pub mod demo;

/// Ends a command-line program: prints `error: ...` with the cause chain on stderr and returns a
/// failure exit code, or success. Used by the `zoo` tool and every example binary, so that bad
/// input gets a clear message instead of a panic or a debug dump.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
