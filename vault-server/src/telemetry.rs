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

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::store::{CredentialStore as _, SledStore};

/// Bucket bounds of the call latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0,
];

/// Starts the HTTP listener for `/metrics` on `addr`. Call from within the
/// runtime.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("vault_call_duration_seconds".into()),
            &LATENCY_BUCKETS,
        )?
        .install()?;
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
    Ok(())
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
