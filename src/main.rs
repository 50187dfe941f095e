//! The `busbar` binary: the command line of [`busbar::cli`] on the
//! process's standard streams (which drop styles off a terminal).

use std::process::ExitCode;

/// mimalloc: the engine allocates many small values per event on several
/// threads, where glibc's allocator measurably costs throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = busbar::cli::main(
        std::env::args_os(),
        &mut anstream::stdout(),
        &mut anstream::stderr(),
    );
    ExitCode::from(code)
}
