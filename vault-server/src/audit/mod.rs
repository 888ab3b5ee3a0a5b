//! The audit trail: one event per call, chained so that no one can quietly
//! edit it.
//!
//! An event says who ([`AuditEvent::caller`]) did what (operation, purpose)
//! to which user's credential, when, with what outcome, under which request
//! id. It never holds a secret, a key or a token: only identities, ids,
//! names and status codes.
//!
//! Events are numbered from 1 and each is stored with two SHA-256 digests:
//! the previous event's, and its own over
//!
//! ```text
//! "vault.v1 audit" 0x00 | previous digest (32) | encoded event
//! ```
//!
//! Editing any byte of an event changes its digest; removing or reordering
//! events breaks the link from one to the next; [`verify`] walks the chain
//! and names the first event where either happens. The chain starts at the
//! zero digest, or, once old events were pruned, at the digest of the last
//! pruned event (the anchor), so what is kept still verifies. An insider who
//! rewrote every event from some point on could produce a valid chain; the
//! copy shipped to a log collector ([`sink`]), which carries the digests, is
//! what catches that.
//!
//! The store writes an event in the same transaction as the change it
//! records (see [`crate::store`]), so a crash can never leave one without
//! the other.

pub mod sink;

use std::fmt;

use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::credential::UnixMillis;

/// A 32-byte SHA-256 digest.
pub type Digest = [u8; 32];

/// Format byte of stored events.
const FORMAT_V1: u8 = 1;
/// Bytes before the encoded event: format, previous digest, own digest.
const HEADER_LEN: usize = 1 + 32 + 32;

/// One audited call.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct AuditEvent {
    /// When the call happened (milliseconds since the Unix epoch).
    #[prost(uint64, tag = "1")]
    pub time_ms: u64,
    /// Who made it: the caller's identity.
    #[prost(string, tag = "2")]
    pub caller: String,
    /// What it was (`store`, `decrypt`, `keys.rotate`, …).
    #[prost(string, tag = "3")]
    pub operation: String,
    /// For a decrypt, the stated purpose.
    #[prost(string, tag = "4")]
    pub purpose: String,
    /// The user it concerned, once validated.
    #[prost(string, tag = "5")]
    pub user_id: String,
    /// The credential it concerned, once validated.
    #[prost(string, tag = "6")]
    pub credential_id: String,
    /// The gRPC status code name (`Ok`, `NotFound`, `PermissionDenied`, …).
    #[prost(string, tag = "7")]
    pub outcome: String,
    /// The request id, from the caller's `x-request-id` or made up.
    #[prost(string, tag = "8")]
    pub request_id: String,
    /// A short non-secret detail, such as how many records a call touched.
    #[prost(string, tag = "9")]
    pub detail: String,
}

impl AuditEvent {
    /// A blank event at the current time.
    pub fn now() -> Self {
        Self {
            time_ms: UnixMillis::now().0,
            ..Default::default()
        }
    }
}

/// An event with its place in the chain.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// Digest of the event before it.
    pub prev: Digest,
    /// Its own digest.
    pub digest: Digest,
    /// The event.
    pub event: AuditEvent,
}

impl fmt::Debug for ChainedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainedEvent")
            .field("seq", &self.seq)
            .field("digest", &hex(&self.digest))
            .field("event", &self.event)
            .finish()
    }
}

/// The end of the chain: the last event's number and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHead {
    /// Number of the last event; 0 before the first.
    pub seq: u64,
    /// Digest of the last event; zero before the first.
    pub digest: Digest,
}

impl ChainHead {
    /// Chains `event` after this head: the stored key and value of the new
    /// event, and the head it leads to.
    pub fn append(&self, event: &AuditEvent) -> (ChainedEvent, Vec<u8>) {
        let content = event.encode_to_vec();
        let chained = ChainedEvent {
            seq: self.seq + 1,
            prev: self.digest,
            digest: digest(&self.digest, &content),
            event: event.clone(),
        };
        let mut value = Vec::with_capacity(HEADER_LEN + content.len());
        value.push(FORMAT_V1);
        value.extend_from_slice(&chained.prev);
        value.extend_from_slice(&chained.digest);
        value.extend_from_slice(&content);
        (chained, value)
    }

    /// The head after `event`.
    pub fn after(event: &ChainedEvent) -> Self {
        Self {
            seq: event.seq,
            digest: event.digest,
        }
    }
}

/// The key an event is stored under: its number, big-endian, so that the
/// store's order is the chain's.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn digest(prev: &Digest, content: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(b"vault.v1 audit\0");
    hasher.update(prev);
    hasher.update(content);
    hasher.finalize().into()
}

/// Why a stored event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event {seq} is unreadable: {reason}")]
pub struct UnreadableEvent {
    /// The event's number, from its key (0 if the key is not a number).
    pub seq: u64,
    /// What is wrong.
    pub reason: &'static str,
}

/// Reads a stored event without checking its digests.
pub fn decode(key: &[u8], value: &[u8]) -> Result<ChainedEvent, UnreadableEvent> {
    let seq = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let unreadable = |reason| UnreadableEvent { seq, reason };
    if key.len() != 8 {
        return Err(unreadable("its key is not an event number"));
    }
    if value.len() < HEADER_LEN || value[0] != FORMAT_V1 {
        return Err(unreadable("unknown format"));
    }
    let prev = value[1..33]
        .try_into()
        .map_err(|_| unreadable("short header"))?;
    let digest = value[33..65]
        .try_into()
        .map_err(|_| unreadable("short header"))?;
    let event = AuditEvent::decode(&value[HEADER_LEN..]).map_err(|_| unreadable("malformed"))?;
    Ok(ChainedEvent {
        seq,
        prev,
        digest,
        event,
    })
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The number of the last pruned event; 0 if none was pruned.
    pub pruned_through: u64,
    /// Events checked, up to and including the first broken one.
    pub checked: u64,
    /// The head of the intact chain.
    pub head: ChainHead,
    /// The first event that breaks the chain, and how.
    pub broken: Option<(u64, String)>,
}

/// The detail of the `audit.prune` event that records a prune through
/// `anchor`.
pub fn prune_detail(anchor: &ChainHead) -> String {
    format!("through={} anchor={}", anchor.seq, hex(&anchor.digest))
}

/// Walks stored events (key, value) in key order from `anchor` (the head
/// before the first kept event), checking numbering, links and digests. A
/// chain that starts after an anchor must also hold the `audit.prune` event
/// that recorded that prune; otherwise the missing events were removed by
/// hand.
pub fn verify<E: fmt::Display>(
    anchor: ChainHead,
    events: impl IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
) -> Result<Verification, E> {
    let mut head = anchor;
    let mut checked = 0;
    let pruned_through = anchor.seq;
    let expected_prune = prune_detail(&anchor);
    let mut prune_recorded = anchor.seq == 0;
    for entry in events {
        let (key, value) = entry?;
        checked += 1;
        let expected = head.seq + 1;
        let broken = |reason: String| Verification {
            pruned_through,
            checked,
            head,
            broken: Some((expected, reason)),
        };
        let event = match decode(&key, &value) {
            Ok(event) => event,
            Err(err) => return Ok(broken(err.to_string())),
        };
        if event.seq != expected {
            return Ok(broken(format!(
                "event {expected} is missing (the next stored event is {})",
                event.seq
            )));
        }
        if event.prev != head.digest {
            return Ok(broken(format!(
                "event {expected} does not follow event {}: its link to the previous digest is \
                 wrong (removed, reordered or rewritten events)",
                head.seq
            )));
        }
        if digest(&event.prev, &value[HEADER_LEN..]) != event.digest {
            return Ok(broken(format!(
                "event {expected} was altered: its content does not match its digest"
            )));
        }
        prune_recorded |=
            event.event.operation == "audit.prune" && event.event.detail == expected_prune;
        head = ChainHead::after(&event);
    }
    let broken = (!prune_recorded).then(|| {
        (
            anchor.seq + 1,
            format!(
                "events 1 to {} are gone, but no audit.prune event records their pruning",
                anchor.seq
            ),
        )
    });
    Ok(Verification {
        pruned_through,
        checked,
        head,
        broken,
    })
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
