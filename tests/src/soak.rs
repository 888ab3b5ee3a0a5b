//! The soak test: many concurrent clients mixing store, decrypt, list and
//! delete against one server for a fixed time, then a check that every
//! acknowledged write is present and decrypts, and every acknowledged delete
//! is gone. Run for 30 seconds by the test suite and for as long as you like
//! by the `vault-soak` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use secrecy::ExposeSecret as _;
use vault_client::{Purpose, VaultClient};

use crate::{TestVault, odoo};

/// How a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    /// Concurrent clients, each with its own connection and user.
    pub clients: usize,
    /// How long the load runs.
    pub duration: Duration,
    /// Most live credentials one client keeps; past it, it deletes.
    pub max_live_per_client: usize,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            clients: 64,
            duration: Duration::from_secs(30),
            max_live_per_client: 100,
        }
    }
}

/// What a soak did and found.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Calls made, by operation: store, decrypt, list, delete.
    pub calls: BTreeMap<&'static str, u64>,
    /// Calls that failed, with their messages (the first few).
    pub errors: u64,
    /// The first failures, for the report.
    pub first_errors: Vec<String>,
    /// Resident memory once warmed up (after a tenth of the run), KiB.
    pub resident_start_kib: u64,
    /// Resident memory at the end of the load, KiB.
    pub resident_end_kib: u64,
    /// Highest resident memory sampled, KiB.
    pub resident_max_kib: u64,
    /// Credentials checked after the load, all present and decrypting.
    pub verified_live: usize,
    /// Deleted credentials checked to be gone.
    pub verified_deleted: usize,
    /// Verification failures (lost, changed or resurrected credentials).
    pub verify_failures: Vec<String>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl SoakReport {
    /// All calls made.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        writeln!(
            f,
            "calls: {} in {:.1} s ({:.0}/s)",
            self.total_calls(),
            secs,
            self.total_calls() as f64 / secs
        )?;
        for (operation, count) in &self.calls {
            writeln!(f, "  {operation:<8} {count}")?;
        }
        writeln!(f, "errors: {}", self.errors)?;
        for error in &self.first_errors {
            writeln!(f, "  {error}")?;
        }
        writeln!(
            f,
            "resident memory: {} KiB warmed up, {} KiB at the end, {} KiB at most",
            self.resident_start_kib, self.resident_end_kib, self.resident_max_kib
        )?;
        writeln!(
            f,
            "after the load: {} live credentials present and decrypting, {} deleted ones gone, \
             {} failures",
            self.verified_live,
            self.verified_deleted,
            self.verify_failures.len()
        )?;
        for failure in self.verify_failures.iter().take(10) {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

/// One client's view: what it was told is stored, and what deleted.
#[derive(Default)]
struct Ledger {
    live: BTreeMap<String, Vec<u8>>,
    deleted: BTreeSet<String>,
    calls: BTreeMap<&'static str, u64>,
    errors: Vec<String>,
    error_count: u64,
}

impl Ledger {
    fn count(&mut self, operation: &'static str, result: Result<(), String>) {
        *self.calls.entry(operation).or_default() += 1;
        if let Err(message) = result {
            self.error_count += 1;
            if self.errors.len() < 3 {
                self.errors.push(format!("{operation}: {message}"));
            }
        }
    }
}

/// Runs a soak against `vault`.
pub async fn run(vault: &TestVault, config: SoakConfig) -> SoakReport {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::with_capacity(config.clients);
    for n in 0..config.clients {
        let api = vault.client().await;
        let sync = vault.sync_client().await;
        let user = format!("soak-{n}");
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(client_loop(api, sync, user, config, stop)));
    }

    let started = Instant::now();
    let mut report = SoakReport::default();
    let warm = config.duration / 10;
    let mut warmed = false;
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let resident = vault.resident_kib();
        report.resident_max_kib = report.resident_max_kib.max(resident);
        if !warmed && started.elapsed() >= warm {
            report.resident_start_kib = resident;
            warmed = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    report.resident_end_kib = vault.resident_kib();

    let mut ledgers = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        let ledger = client.await.expect("a soak client panicked");
        ledgers.push((format!("soak-{n}"), ledger));
    }
    report.elapsed = started.elapsed();
    for (_, ledger) in &mut ledgers {
        for (operation, count) in &ledger.calls {
            *report.calls.entry(operation).or_default() += count;
        }
        report.errors += ledger.error_count;
        report.first_errors.append(&mut ledger.errors);
    }
    report.first_errors.truncate(10);
    verify(vault, &ledgers, &mut report).await;
    report
}

async fn client_loop(
    api: VaultClient,
    sync: VaultClient,
    user: String,
    config: SoakConfig,
    stop: Arc<AtomicBool>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rand::rng().random_range(0..100);
        let full = ledger.live.len() >= config.max_live_per_client;
        if ledger.live.is_empty() || (roll < 30 && !full) {
            let secret = format!("soak-{user}-{n}-{}", rand::rng().random::<u64>()).into_bytes();
            let result = api.store(&user, odoo(n), &secret).await;
            let outcome = result.map(|stored| {
                ledger.live.insert(stored.id, secret);
            });
            ledger.count("store", outcome.map_err(|err| err.to_string()));
        } else if roll < 70 {
            let (id, expected) = pick(&ledger.live);
            let result = sync.decrypt(&user, &id, Purpose::Sync).await;
            let outcome = match result {
                Ok(secret) if secret.expose_secret() == expected.as_slice() => Ok(()),
                Ok(_) => Err(format!("{id} decrypted to another secret")),
                Err(err) => Err(err.to_string()),
            };
            ledger.count("decrypt", outcome);
        } else if roll < 85 {
            let outcome = match api.list_page(&user, 100, "").await {
                Ok((page, _)) if page.len() == ledger.live.len().min(100) => Ok(()),
                Ok((page, _)) => Err(format!(
                    "listed {} credentials, {} are live",
                    page.len(),
                    ledger.live.len()
                )),
                Err(err) => Err(err.to_string()),
            };
            ledger.count("list", outcome);
        } else {
            let (id, _) = pick(&ledger.live);
            ledger.live.remove(&id);
            let result = api.delete(&user, &id).await;
            if result.is_ok() {
                ledger.deleted.insert(id);
            }
            ledger.count("delete", result.map_err(|err| err.to_string()));
        }
    }
    ledger
}

fn pick(live: &BTreeMap<String, Vec<u8>>) -> (String, Vec<u8>) {
    let index = rand::rng().random_range(0..live.len());
    let (id, secret) = live.iter().nth(index).expect("an index below the length");
    (id.clone(), secret.clone())
}

/// Checks every client's ledger against the server, several users at once.
async fn verify(vault: &TestVault, ledgers: &[(String, Ledger)], report: &mut SoakReport) {
    let api = vault.client().await;
    let sync = vault.sync_client().await;
    let mut checks = Vec::new();
    for (user, ledger) in ledgers {
        let (api, sync, user) = (api.clone(), sync.clone(), user.clone());
        let live = ledger.live.clone();
        let deleted = ledger.deleted.clone();
        checks.push(tokio::spawn(async move {
            verify_user(&api, &sync, &user, &live, &deleted).await
        }));
    }
    for check in checks {
        let (live, deleted, mut failures) = check.await.expect("a check panicked");
        report.verified_live += live;
        report.verified_deleted += deleted;
        report.verify_failures.append(&mut failures);
    }
}

/// Checks one user: live credentials decrypt to what was stored, deleted ones
/// are gone, and the list holds exactly the live ones.
async fn verify_user(
    api: &VaultClient,
    sync: &VaultClient,
    user: &str,
    live: &BTreeMap<String, Vec<u8>>,
    deleted: &BTreeSet<String>,
) -> (usize, usize, Vec<String>) {
    let (mut verified_live, mut verified_deleted, mut failures) = (0, 0, Vec::new());
    for (id, secret) in live {
        match sync.decrypt(user, id, Purpose::Sync).await {
            Ok(opened) if opened.expose_secret() == secret.as_slice() => verified_live += 1,
            Ok(_) => failures.push(format!("{user}/{id}: changed")),
            Err(err) => failures.push(format!("{user}/{id}: {err}")),
        }
    }
    for id in deleted {
        match api.get(user, id).await {
            Err(err) if err.code() == Some(tonic::Code::NotFound) => verified_deleted += 1,
            other => failures.push(format!("{user}/{id}: deleted, but get says {other:?}")),
        }
    }
    match api.list(user).await {
        Ok(listed) if listed.len() == live.len() => {}
        Ok(listed) => failures.push(format!(
            "{user}: {} listed, {} acknowledged",
            listed.len(),
            live.len()
        )),
        Err(err) => failures.push(format!("{user}: list: {err}")),
    }
    (verified_live, verified_deleted, failures)
}
