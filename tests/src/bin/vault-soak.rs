//! `vault-soak`: starts a vault server and soaks it with concurrent clients
//! (see `vault_e2e::soak`), then prints the report. Exits 1 if any call
//! failed or any acknowledged write was not found as acknowledged.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/vault-soak --minutes 10
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vault_e2e::TestVault;
use vault_e2e::soak::{self, SoakConfig};

/// Soak a vault server with concurrent clients.
#[derive(Debug, Parser)]
struct Args {
    /// How long to run the load.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Or seconds, for a short run.
    #[arg(long, conflicts_with = "minutes")]
    seconds: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds.unwrap_or(args.minutes * 60));
    let vault = TestVault::start();
    println!(
        "soaking {} (pid {}) with {} clients for {}s",
        vault.addr(),
        vault.pid(),
        args.clients,
        duration.as_secs()
    );
    let config = SoakConfig {
        clients: args.clients,
        duration,
        ..SoakConfig::default()
    };
    let report = soak::run(&vault, config).await;
    print!("{report}");
    if report.errors == 0 && report.verify_failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
