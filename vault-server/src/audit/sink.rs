//! A second copy of the audit trail, as JSON lines, for a log shipper.
//!
//! Each committed event is written as one JSON object on one line, with its
//! number and digests, to standard output or appended to a file. Shipped off
//! the machine, this copy is what an insider who rewrote the stored chain
//! cannot also rewrite. Writing it is best effort: a failure is logged, and
//! never undoes or blocks the call that was audited.

use std::fs::OpenOptions;
use std::io::{self, LineWriter, Write};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use super::{ChainedEvent, hex};

/// Where the JSON-lines copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SinkTarget {
    /// Nowhere.
    #[default]
    Off,
    /// Standard output (alongside the server's few lifecycle lines, which
    /// are not JSON).
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// The open JSON-lines output.
pub struct Sink {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("on", &self.out.is_some())
            .finish()
    }
}

impl Sink {
    /// Opens the output.
    pub fn open(target: &SinkTarget) -> io::Result<Self> {
        let out: Option<Box<dyn Write + Send>> = match target {
            SinkTarget::Off => None,
            SinkTarget::Stdout => Some(Box::new(LineWriter::new(io::stdout()))),
            SinkTarget::File(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                Some(Box::new(LineWriter::new(file)))
            }
        };
        Ok(Self {
            out: out.map(Mutex::new),
        })
    }

    /// A sink that writes nothing.
    pub fn off() -> Self {
        Self { out: None }
    }

    /// Writes one event as a JSON line.
    pub fn write(&self, chained: &ChainedEvent) {
        let Some(out) = &self.out else {
            return;
        };
        let line = to_json(chained);
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = writeln!(out, "{line}") {
            tracing::error!(error = %err, seq = chained.seq, "cannot write the audit copy");
        }
    }
}

/// An event as one JSON object.
pub fn to_json(chained: &ChainedEvent) -> serde_json::Value {
    let event = &chained.event;
    serde_json::json!({
        "seq": chained.seq,
        "time_ms": event.time_ms,
        "caller": event.caller,
        "operation": event.operation,
        "purpose": event.purpose,
        "user_id": event.user_id,
        "credential_id": event.credential_id,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "detail": event.detail,
        "prev": hex(&chained.prev),
        "digest": hex(&chained.digest),
    })
}
