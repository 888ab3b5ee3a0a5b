//! `vault-load`: the real vault under load, beside the floors it stands on.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/vault-load --connections 4 --in-flight 16 --seconds 10
//! ```
//!
//! Starts `vault-server --dev` (log level `info`, the production default) and
//! a bare echo gRPC service on the same rustls mutual-TLS setup with the same
//! `--dev` certificates, each as its own process on loopback. Then, one after
//! another, for a fixed time each, with N connections × M calls in flight:
//!
//! - `echo`: the gRPC + TLS floor, shaped like a decrypt;
//! - `decrypt`: `DecryptCredential` of preloaded records (sync role);
//! - `list`: `ListCredentials`, a page of 10 (sync role);
//! - `mixed`: 70 % decrypt, 20 % list, 10 % store (api role);
//! - `store`: `StoreCredential`, durable on reply, one at a time and with
//!   N × M writers;
//! - `sled`: bare sled, insert of the same record bytes plus a shared flush,
//!   1 writer and N × M writers: the storage floor; and the same with the
//!   record and an audit-sized value in one transaction over two trees, the
//!   shape of the vault's commits.
//!
//! and prints throughput and latency percentiles, then the vault's figures as
//! ratios of the floors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vault_bench::drive::{self, Stats, Window};
use vault_bench::echo::{self, v1 as echo_v1};
use vault_bench::floor::{self, Write};
use vault_e2e::TestVault;
use vault_proto::v1;
use vault_server::credential::{
    CredentialId, Fields, OdooConnection, Record, SealedSecret, UnixMillis, UserId,
};
use vault_server::crypto::fernet::FernetKey;
use vault_server::store::record;
use vault_server::transport::TlsFiles;

/// The secret every stored credential gets: 32 bytes, as in the crypto
/// benchmarks.
const SECRET: &[u8; 32] = b"odoo-password-of-32-bytes-long!!";
/// Credentials per user in the preloaded store.
const PER_USER: usize = 10;
/// Every scenario, in the order they run.
const SCENARIOS: [&str; 6] = ["echo", "decrypt", "list", "mixed", "store", "sled"];

#[derive(Debug, Parser)]
struct Args {
    /// Connections to each server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured warm-up seconds before each scenario.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Credentials stored before the read scenarios.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Which scenarios to run (all by default); ratios are printed for the
    /// pairs that ran.
    #[arg(long, value_delimiter = ',', default_values_t = SCENARIOS.map(String::from))]
    only: Vec<String>,
    /// Serve the echo floor with the `--dev` TLS files of this folder and
    /// print its address (how `vault-load` starts it in its own process).
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.echo_server {
        Some(tls_dir) => runtime.block_on(serve_echo(tls_dir)),
        None => runtime.block_on(run(&args)),
    }
}

async fn serve_echo(tls_dir: &Path) -> anyhow::Result<()> {
    let files = TlsFiles {
        cert: tls_dir.join("server.pem"),
        key: tls_dir.join("server.key"),
        client_ca: tls_dir.join("ca.pem"),
    };
    echo::serve(&files, "127.0.0.1:0".parse()?).await
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let window = Window {
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
    };
    let writers = args.connections * args.in_flight;
    let concurrency = format!("{} x {}", args.connections, args.in_flight);
    println!("machine: {}", vault_bench::machine());
    println!("load before: {}", vault_bench::load_average());

    let vault = TestVault::start_logging("info", &[]);
    let tls_dir = vault.dev_layout().tls_dir();
    let (mut echo_process, echo_addr) = start_echo(&tls_dir).await?;

    let sync = connect_all(
        &vault.addr().to_string(),
        &tls_dir,
        "sync",
        args.connections,
    )
    .await?;
    let api = connect_all(&vault.addr().to_string(), &tls_dir, "api", args.connections).await?;
    let echo_lanes = connect_all(&echo_addr, &tls_dir, "sync", args.connections).await?;

    let stored = Arc::new(preload(&api[0], args.records).await?);
    println!("preloaded {} credentials", stored.len());

    let mut results: BTreeMap<&str, Stats> = BTreeMap::new();
    let mut record = |name: &'static str, concurrency: &str, stats: Stats| {
        println!("{}", stats.row(name, concurrency));
        results.insert(name, stats);
    };
    let runs = |name: &str| args.only.iter().any(|wanted| wanted == name);
    println!();
    println!("{}", Stats::header());

    if runs("echo") {
        let echo = drive::drive(&echo_lanes, args.in_flight, window, |lane, n| async move {
            let request = echo_v1::EchoRequest {
                user_id: "load-0".into(),
                credential_id: format!("{n:032x}"),
                purpose: v1::Purpose::Sync as i32,
            };
            echo_v1::echo_client::EchoClient::new(lane)
                .echo(request)
                .await
                .is_ok()
        })
        .await;
        record("echo", &concurrency, echo);
    }

    if runs("decrypt") {
        let targets = Arc::clone(&stored);
        let decrypt = drive::drive(&sync, args.in_flight, window, move |lane, n| {
            let (user, id) = targets[n as usize % targets.len()].clone();
            async move { call_decrypt(lane, user, id, v1::Purpose::Sync).await }
        })
        .await;
        record("decrypt", &concurrency, decrypt);
    }

    if runs("list") {
        let targets = Arc::clone(&stored);
        let list = drive::drive(&sync, args.in_flight, window, move |lane, n| {
            let user = targets[n as usize % targets.len()].0.clone();
            async move { call_list(lane, user).await }
        })
        .await;
        record("list", &concurrency, list);
    }

    if runs("mixed") {
        let targets = Arc::clone(&stored);
        let mixed = drive::drive(&api, args.in_flight, window, move |lane, n| {
            let (user, id) = targets[n as usize % targets.len()].clone();
            async move {
                match n % 10 {
                    0 => call_store(lane, format!("mixed-{}", n % 997)).await,
                    1 | 2 => call_list(lane, user).await,
                    _ => call_decrypt(lane, user, id, v1::Purpose::ConnectionTest).await,
                }
            }
        })
        .await;
        record("mixed", &concurrency, mixed);
    }

    if runs("store") {
        let one = drive::drive(&api[..1], 1, window, |lane, n| {
            call_store(lane, format!("writer-{}", n % 1009))
        })
        .await;
        record("store 1 writer", "1 x 1", one);
        let many = drive::drive(&api, args.in_flight, window, |lane, n| {
            call_store(lane, format!("writer-{}", n % 1009))
        })
        .await;
        record("store N writers", &concurrency, many);
    }

    if runs("sled") {
        let scratch = tempfile::tempdir()?;
        let value = record::encode(&sample_record());
        let dir = |name: &str| scratch.path().join(name);
        let one = floor::writers(&dir("one"), Write::Insert, 1, &value, window).await;
        record("sled 1 writer", "1", one);
        let many = floor::writers(&dir("many"), Write::Insert, writers, &value, window).await;
        record("sled N writers", &writers.to_string(), many);
        let tx_one = floor::writers(&dir("tx-one"), Write::Transaction, 1, &value, window).await;
        record("sled tx 1 writer", "1", tx_one);
        let tx_many =
            floor::writers(&dir("tx-many"), Write::Transaction, writers, &value, window).await;
        record("sled tx N writers", &writers.to_string(), tx_many);
    }

    println!();
    println!("load after: {}", vault_bench::load_average());
    print_ratios(&results);
    echo_process.kill().ok();
    echo_process.wait().ok();
    Ok(())
}

fn print_ratios(results: &BTreeMap<&str, Stats>) {
    let ratios = [
        (
            "decrypt / echo, throughput",
            "decrypt",
            "echo",
            false,
            ">= 0.8",
        ),
        ("decrypt / echo, p99", "decrypt", "echo", true, "<= 1.5"),
        (
            "store N writers / sled N writers, throughput",
            "store N writers",
            "sled N writers",
            false,
            ">= 0.8",
        ),
        (
            "store N writers / store 1 writer, throughput",
            "store N writers",
            "store 1 writer",
            false,
            ">= 2.5",
        ),
        (
            "sled N writers / sled 1 writer, throughput",
            "sled N writers",
            "sled 1 writer",
            false,
            "(the floor's own gain)",
        ),
        (
            "store N writers / sled tx N writers, throughput",
            "store N writers",
            "sled tx N writers",
            false,
            "(against sled with the vault's transaction shape)",
        ),
        (
            "sled tx N writers / sled tx 1 writer, throughput",
            "sled tx N writers",
            "sled tx 1 writer",
            false,
            "(what group commit can gain with transactions)",
        ),
    ];
    println!();
    println!("| ratio | value | target |");
    println!("| --- | ---: | --- |");
    for (label, measured, floor, latency, target) in ratios {
        let (Some(measured), Some(floor)) = (results.get(measured), results.get(floor)) else {
            continue;
        };
        let value = if latency {
            measured.latency_ms(0.99) / floor.latency_ms(0.99)
        } else {
            measured.throughput() / floor.throughput()
        };
        println!("| {label} | {value:.2} | {target} |");
    }
}

/// Starts the echo floor as a child process of this same binary and waits
/// for its address.
async fn start_echo(tls_dir: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--echo-server")
        .arg(tls_dir)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .context("start the echo server")?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(tokio::process::ChildStdout::from_std(stdout)?).lines();
    let line = lines.next_line().await?.context("the echo server exited")?;
    let addr = line
        .strip_prefix("listening on ")
        .context("the echo server printed no address")?
        .to_owned();
    Ok((child, addr))
}

/// `count` connections to `addr`, each with the client certificate of `role`.
async fn connect_all(
    addr: &str,
    tls_dir: &Path,
    role: &str,
    count: usize,
) -> anyhow::Result<Vec<Channel>> {
    let read =
        |name: String| std::fs::read(tls_dir.join(&name)).with_context(|| format!("read {name}"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())?))
        .identity(Identity::from_pem(
            read(format!("{role}.pem"))?,
            read(format!("{role}.key"))?,
        ));
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.clone())?
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Stores `count` credentials, `PER_USER` per user, 64 at a time; returns
/// their (user, id).
async fn preload(api: &Channel, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut stored = Vec::with_capacity(count);
    let users = count.div_ceil(PER_USER).max(1);
    for chunk in (0..count).collect::<Vec<_>>().chunks(64) {
        let mut tasks = Vec::new();
        for &n in chunk {
            let mut stub = v1::vault_client::VaultClient::new(api.clone());
            let user = format!("load-{}", n % users);
            tasks.push(tokio::spawn(async move {
                let reply = stub.store_credential(store_request(&user)).await?;
                let id = reply
                    .into_inner()
                    .credential
                    .map(|credential| credential.id)
                    .unwrap_or_default();
                anyhow::Ok((user, id))
            }));
        }
        for task in tasks {
            stored.push(task.await??);
        }
    }
    Ok(stored)
}

fn store_request(user: &str) -> v1::StoreCredentialRequest {
    v1::StoreCredentialRequest {
        user_id: user.to_owned(),
        fields: Some(v1::CredentialFields {
            kind: Some(v1::credential_fields::Kind::Odoo(v1::OdooConnection {
                url: "https://tenant.odoo.example.com".into(),
                database: "production".into(),
                username: "sync@example.com".into(),
            })),
        }),
        secret: SECRET.to_vec(),
    }
}

async fn call_store(lane: Channel, user: String) -> bool {
    v1::vault_client::VaultClient::new(lane)
        .store_credential(store_request(&user))
        .await
        .is_ok()
}

async fn call_decrypt(lane: Channel, user: String, id: String, purpose: v1::Purpose) -> bool {
    let request = v1::DecryptCredentialRequest {
        user_id: user,
        credential_id: id,
        purpose: purpose as i32,
    };
    v1::vault_client::VaultClient::new(lane)
        .decrypt_credential(request)
        .await
        .is_ok()
}

async fn call_list(lane: Channel, user: String) -> bool {
    let request = v1::ListCredentialsRequest {
        user_id: user,
        page_size: PER_USER as u32,
        page_token: String::new(),
    };
    v1::vault_client::VaultClient::new(lane)
        .list_credentials(request)
        .await
        .is_ok()
}

/// A record of the shape `store` sends, sealed, for the sled floor to
/// write the same number of bytes.
fn sample_record() -> Record {
    let owner = UserId::parse("user_id", "writer-1000").expect("a valid user id");
    let now = UnixMillis::now();
    Record {
        secret: SealedSecret {
            key_version: 1,
            token: FernetKey::generate().encrypt(SECRET),
        },
        fields: Fields::Odoo(
            OdooConnection::new(
                "https://tenant.odoo.example.com",
                "production",
                "sync@example.com",
            )
            .expect("valid fields"),
        ),
        id: CredentialId::generate(),
        owner,
        created_at: now,
        updated_at: now,
    }
}
