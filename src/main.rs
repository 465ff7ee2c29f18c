//! `zoo`: the command-line front door of candle-zoo. It lists, inspects, verifies and fetches the
//! checkpoints of the weights manifest, and renders the gallery.

mod cli;

/// A memory allocator that keeps freed pages for reuse: training allocates and frees the same
/// large buffers every step, which glibc hands back to the kernel (page faults ate a third of a
/// step's time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    candle_zoo::tune_runtime();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {info}");
    }));
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether the error comes from writing to a closed pipe (`zoo list | head`), which is not a
/// failure worth reporting.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
