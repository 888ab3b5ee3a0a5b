//! Benchmarks of the vault, and the floors they are measured against.
//!
//! The binaries (see `BENCHMARKS.md` at the top of the workspace):
//!
//! - `crypto-compare`: our Fernet and per-record sealing against Python's
//!   `cryptography`, one core each, in one run;
//! - `vault-load`: the real server over mutual TLS under N connections × M
//!   calls in flight, beside a bare gRPC [`echo`] service on the same TLS
//!   setup and a bare sled group-commit writer ([`floor`]);
//! - `rotation-bench`: key rotation of a large store, decrypt latency while
//!   it runs, server start time and disk per record.
//!
//! This library holds what they share: the echo service, the sled floor,
//! the load driver with its latency histograms ([`drive`]), and a few
//! measurements of the machine.

pub mod drive;
pub mod echo;
pub mod floor;

use std::path::Path;

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them, so
/// every report says how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The CPU model and how many cores this process may use.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{model}, {cores} cores")
}

/// Bytes used by the files below `dir` (their lengths, not blocks).
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}
