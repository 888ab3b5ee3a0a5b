//! Prometheus metrics, served over HTTP at `/metrics` on `--metrics-listen`.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `vault_calls_total` | counter | `operation`, `outcome` (a gRPC code name) |
//! | `vault_call_duration_seconds` | histogram | `operation` |
//! | `vault_decrypts_total` | counter | `purpose`, `caller` (a certificate identity) |
//! | `vault_records` | gauge | `key_version` |
//! | `vault_rotation_records_done`, `vault_rotation_records_total` | gauge | |
//! | `vault_audit_chain_length` | gauge | |
//! | `vault_store_writable` | gauge (1 or 0) | |
//! | `process_resident_memory_bytes` | gauge | |
//!
//! Labels are bounded sets: operations, outcomes, purposes, key versions and
//! the identities the policy names. A user id or credential id is never a
//! label. Without `--metrics-listen` no recorder is installed and every
//! update here costs next to nothing.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::store::{CredentialStore as _, SledStore};

/// Bucket bounds of the call latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0,
];

/// Connections the metrics listener serves at once; more wait in the
/// kernel's accept queue.
const METRICS_CONNECTIONS: u32 = 8;

/// How long a scrape may take from accept to the last byte.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the recorder and serves `GET /metrics` on `listener` over
/// HTTP/1.1, one request per connection, with few connections at once, a
/// deadline on each, and back-off when accepting fails: a scraper, or
/// anyone else who reaches the port, cannot starve the gRPC port of memory
/// or file handles. Call from within the runtime.
pub fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("vault_call_duration_seconds".into()),
            &LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    let slots = crate::limits::ConnectionSlots::new(METRICS_CONNECTIONS);
    tokio::spawn(async move {
        loop {
            let slot = slots.acquire().await;
            let Some((tcp, _)) = crate::transport::accept(&listener).await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let handle = handle.clone();
                    async move { Ok::<_, std::convert::Infallible>(scrape(&handle, &request)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(SCRAPE_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, connection).await;
            });
        }
    });
    Ok(())
}

/// The answer to one request: the metrics for `GET /metrics`, 404 or 405
/// otherwise.
fn scrape<B>(
    handle: &metrics_exporter_prometheus::PrometheusHandle,
    request: &http::Request<B>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => {
            handle.run_upkeep();
            (http::StatusCode::OK, handle.render())
        }
        (_, "/metrics") => (http::StatusCode::METHOD_NOT_ALLOWED, String::new()),
        _ => (http::StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn describe() {
    metrics::describe_counter!(
        "vault_calls_total",
        "gRPC calls answered, by operation and outcome"
    );
    metrics::describe_histogram!(
        "vault_call_duration_seconds",
        metrics::Unit::Seconds,
        "time to answer a call, audit event included"
    );
    metrics::describe_counter!(
        "vault_decrypts_total",
        "secrets decrypted, by purpose and caller"
    );
    metrics::describe_gauge!(
        "vault_records",
        "stored credentials, by the key version sealing them"
    );
    metrics::describe_gauge!("vault_audit_chain_length", "number of the last audit event");
    metrics::describe_gauge!("vault_store_writable", "1 while the store takes writes");
    metrics::describe_gauge!(
        "process_resident_memory_bytes",
        metrics::Unit::Bytes,
        "resident memory of the server"
    );
}

/// Counts one answered call.
pub fn call_finished(operation: &str, outcome: &str, elapsed: Duration) {
    metrics::counter!(
        "vault_calls_total",
        "operation" => operation.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
    metrics::histogram!("vault_call_duration_seconds", "operation" => operation.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Counts one secret handed out.
pub fn decrypted(purpose: &str, caller: &str) {
    metrics::counter!(
        "vault_decrypts_total",
        "purpose" => purpose.to_owned(),
        "caller" => caller.to_owned()
    )
    .increment(1);
}

/// Records how far a key rotation has come.
pub fn rotation_progress(done: u64, total: u64) {
    metrics::gauge!("vault_rotation_records_done").set(done as f64);
    metrics::gauge!("vault_rotation_records_total").set(total as f64);
}

/// Samples the store and the process: records per key version, the audit
/// chain's length, whether the store is writable, resident memory.
pub fn sample(store: &SledStore, writable: bool) {
    for (version, records) in store.key_usage() {
        metrics::gauge!("vault_records", "key_version" => version.to_string()).set(records as f64);
    }
    metrics::gauge!("vault_audit_chain_length").set(store.audit_length() as f64);
    metrics::gauge!("vault_store_writable").set(if writable { 1.0 } else { 0.0 });
    if let Some(resident) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(resident as f64);
    }
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
