//! The soak test in its short form (30 seconds; `VAULT_SOAK_SECONDS` to
//! change): 64 clients mixing store, decrypt, list and delete, no call may
//! fail, and afterwards every acknowledged write is present and decrypts.
//! `vault-soak` runs the same for longer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vault_e2e::TestVault;
use vault_e2e::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_for_thirty_seconds_lose_nothing() {
    let seconds = std::env::var("VAULT_SOAK_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let vault = TestVault::start();
    let report = soak::run(
        &vault,
        SoakConfig {
            duration: Duration::from_secs(seconds),
            ..SoakConfig::default()
        },
    )
    .await;
    eprint!("{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.verify_failures.is_empty(), "{report}");
    assert!(report.total_calls() > 64, "{report}");
    assert!(report.verified_live > 0, "{report}");
}
