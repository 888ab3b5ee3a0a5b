//! Rotation benchmark: re-seal a store of N records (1,000,000 by default)
//! under a new key with the real server, and measure decrypt latency while
//! the server is idle and while it rotates; also the server's start time
//! with N records, and disk per record against bare sled holding the same
//! bytes.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/rotation-bench --records 1000000
//! ```
//!
//! The store is filled directly through sled (sealing each record as the
//! server would), because a million store calls would measure the store
//! path, not rotation; the same keys and values go into a bare sled
//! database beside it, for the disk comparison. Everything after that goes
//! through the real binary over mutual TLS on loopback.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use vault_client::{Purpose, VaultClient};
use vault_e2e::{TestVault, odoo};
use vault_server::credential::{CredentialId, Fields, OdooConnection, Record, UnixMillis, UserId};
use vault_server::crypto::keyring::Keyring;
use vault_server::crypto::sealing::RecordBinding;
use vault_server::store::record;

#[derive(Debug, Parser)]
struct Args {
    /// Records in the store.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Records per rotation batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Concurrent decrypt callers measuring latency.
    #[arg(long, default_value_t = 4)]
    callers: usize,
    /// How long to measure idle decrypt latency.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("machine: {}", vault_bench::machine());
    println!("load before: {}", vault_bench::load_average());
    let mut server = TestVault::start_logging("info", &[]);
    let probe = server
        .client()
        .await
        .store("probe", odoo(0), b"probe-secret")
        .await?;
    server.stop();

    let bare = tempfile::tempdir()?;
    let filled = Instant::now();
    fill(&server, bare.path(), args.records)?;
    println!(
        "filled {} records in {:.1?}",
        args.records,
        filled.elapsed()
    );

    // The first start after the fill finds records it has not counted.
    let started = Instant::now();
    server.restart();
    let first_start = started.elapsed();
    // A SIGTERM right after the server prints its address can arrive before
    // its handler is installed (it is registered once serving begins), so
    // wait for an answer before stopping it.
    server.client_as("ops").await.list_keys().await?;
    server.stop();
    let vault_bytes = vault_bench::dir_size(&server.data_dir().join("db"))?;
    let bare_bytes = vault_bench::dir_size(bare.path())?;

    server.add_primary_key(2);
    let started = Instant::now();
    server.restart();
    let start = started.elapsed();
    println!(
        "server start with {} records: {:.0?} (first start after the fill: {:.0?})",
        args.records + 1,
        start,
        first_start
    );

    let sync = server.sync_client().await;
    let idle = measure(
        &sync,
        &probe.id,
        args.callers,
        Duration::from_secs(args.idle_seconds),
        None,
    )
    .await;

    let ops = server.client_as("ops").await;
    let rotation = async {
        let started = Instant::now();
        let mut progress = ops.rotate(args.batch_size).await?;
        let mut done = 0;
        while let Some(report) = progress.message().await? {
            done = report.done;
        }
        anyhow::Ok((done, started.elapsed()))
    };
    let (rotated, during) = tokio::join!(rotation, async {
        measure(
            &sync,
            &probe.id,
            args.callers,
            Duration::from_secs(3600),
            Some(&ops),
        )
        .await
    });
    let (rotated, took) = rotated?;
    server.stop();
    let rotated_bytes = vault_bench::dir_size(&server.data_dir().join("db"))?;
    let per_record = |bytes: u64| bytes as f64 / args.records as f64;

    println!();
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| records rotated | {rotated} |");
    println!("| rotation time | {:.2} s |", took.as_secs_f64());
    println!(
        "| rotation rate | {:.0} records/s |",
        rotated as f64 / took.as_secs_f64()
    );
    for (name, stats) in [("idle", &idle), ("during rotation", &during)] {
        println!(
            "| decrypt {name} | {} calls, p50 {:.2} ms, p99 {:.2} ms |",
            stats.calls, stats.p50_ms, stats.p99_ms
        );
    }
    println!(
        "| p99 during / idle | {:.2}x |",
        during.p99_ms / idle.p99_ms
    );
    println!("| server start | {:.2} s |", start.as_secs_f64());
    println!(
        "| first start after the fill | {:.2} s |",
        first_start.as_secs_f64()
    );
    println!(
        "| disk per record, bare sled | {:.0} B |",
        per_record(bare_bytes)
    );
    println!(
        "| disk per record, vault | {:.0} B ({:.2}x bare) |",
        per_record(vault_bytes),
        vault_bytes as f64 / bare_bytes as f64
    );
    println!(
        "| disk per record, vault after rotation | {:.0} B ({:.2}x bare) |",
        per_record(rotated_bytes),
        rotated_bytes as f64 / bare_bytes as f64
    );
    println!();
    println!("load after: {}", vault_bench::load_average());
    Ok(())
}

/// Seals and writes `count` records straight into the stopped server's
/// database, in batches, with one flush at the end, and the same keys and
/// values into a bare sled database in `bare`.
fn fill(server: &TestVault, bare: &std::path::Path, count: usize) -> anyhow::Result<()> {
    let keyring = Keyring::load(&server.keyring_path())?;
    let db = sled::open(server.data_dir().join("db")).context("open the database")?;
    let tree = db.open_tree("credentials")?;
    let bare = sled::Config::new()
        .path(bare)
        .cache_capacity(64 * 1024 * 1024)
        .open()?;
    let bare_tree = bare.open_tree("credentials")?;
    let now = UnixMillis::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let mut batch = sled::Batch::default();
        for &n in chunk {
            let owner = UserId::parse("user_id", &format!("user{}", n % 50_000))?;
            let id = CredentialId::generate();
            let secret = format!("password-{n:08}");
            let record = Record {
                secret: keyring.seal(
                    RecordBinding {
                        owner: &owner,
                        id: &id,
                    },
                    secret.as_bytes(),
                ),
                fields: Fields::Odoo(OdooConnection::new(
                    "https://tenant.odoo.example.com",
                    "production",
                    "sync@example.com",
                )?),
                id,
                owner,
                created_at: now,
                updated_at: now,
            };
            batch.insert(
                record::key(&record.owner, &record.id),
                record::encode(&record),
            );
        }
        tree.apply_batch(batch.clone())?;
        bare_tree.apply_batch(batch)?;
    }
    // Records written around the store are not in its per-version counts;
    // without them the next start counts every record once, as it does for
    // a database from before the counts were kept.
    db.drop_tree("key_usage")?;
    db.flush()?;
    bare.flush()?;
    Ok(())
}

struct Latency {
    calls: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `callers` loops of decrypts for `limit`, or, with `until_idle`, until
/// no rotation is running any more.
async fn measure(
    sync: &VaultClient,
    id: &str,
    callers: usize,
    limit: Duration,
    rotation: Option<&VaultClient>,
) -> Latency {
    let deadline = Instant::now() + limit;
    let mut tasks = Vec::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..callers {
        let (sync, id, stop) = (sync.clone(), id.to_owned(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                sync.decrypt("probe", &id, Purpose::Sync)
                    .await
                    .expect("decrypt");
                samples.push(started.elapsed());
            }
            samples
        }));
    }
    if let Some(ops) = rotation {
        // Give the rotation a moment to start, then stop once no record is
        // left under the old key.
        tokio::time::sleep(Duration::from_millis(200)).await;
        loop {
            let keys = ops.list_keys().await.expect("list keys");
            if keys.keys.iter().all(|key| key.primary || key.records == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("caller task"));
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Latency {
        calls: samples.len(),
        p50_ms: at(0.50).as_secs_f64() * 1e3,
        p99_ms: at(0.99).as_secs_f64() * 1e3,
    }
}
