//! Writes a directory of generated integration files, the input of the
//! `check` benchmark, so the figure can be reproduced with the release
//! binary:
//!
//! ```sh
//! cargo run --release --example gen_integrations -- /tmp/busbar-1000 1000
//! cargo build --release
//! time target/release/busbar check /tmp/busbar-1000/integrations.d
//! ```
//!
//! Writes `DIR/integrations.d/*.yaml` and `DIR/schemas/events/...` (where
//! `check` finds contracts by default). See `benches/support/generate.rs`.

#[path = "../benches/support/generate.rs"]
mod generate;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), count) = (args.next(), args.next()) else {
        eprintln!("usage: gen_integrations DIR [COUNT (default 1000)]");
        return ExitCode::from(2);
    };
    let count = match count.as_deref().map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(count)) => count,
        Some(Err(error)) => {
            eprintln!("gen_integrations: COUNT: {error}");
            return ExitCode::from(2);
        }
    };
    match generate::generate(&PathBuf::from(&dir), count) {
        Ok(generated) => {
            println!(
                "wrote {} integration files ({} KiB of YAML) and {} contracts; check them with:\n  busbar check {}",
                generated.integrations,
                generated.yaml_bytes / 1024,
                generated.contracts,
                generated.integrations_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gen_integrations: cannot write {dir}: {error}");
            ExitCode::from(2)
        }
    }
}
