//! ListAuditEvents and VerifyAudit: reading and checking the audit trail.

use prost_types::Timestamp;
use vault_proto::v1;

use super::error::ServiceError;
use super::{VaultService, convert};
use crate::audit::{ChainedEvent, hex};
use crate::credential::{InvalidField, UnixMillis};
use crate::store::CredentialStore;

/// Page size when the request leaves it at 0.
const DEFAULT_PAGE: u32 = 100;
/// Largest page a caller may ask for.
const MAX_PAGE: u32 = 1000;
/// Events scanned for one page at most, so that a filter matching nothing
/// in a long trail still answers promptly; the caller continues from
/// `next_after_seq`.
const SCAN_LIMIT: usize = 100_000;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// One page of matching events.
    pub(super) async fn list_audit(
        &self,
        request: v1::ListAuditEventsRequest,
    ) -> Result<v1::ListAuditEventsResponse, ServiceError> {
        let page = match request.page_size {
            0 => DEFAULT_PAGE,
            size if size <= MAX_PAGE => size,
            _ => {
                return Err(
                    InvalidField::new("page_size", format!("must be at most {MAX_PAGE}")).into(),
                );
            }
        } as usize;
        let since = request.since.as_ref().map(millis).transpose()?;
        let until = request.until.as_ref().map(millis).transpose()?;
        let matches = |chained: &ChainedEvent| {
            let event = &chained.event;
            let equal = |filter: &str, value: &str| filter.is_empty() || filter == value;
            since.is_none_or(|since| event.time_ms >= since)
                && until.is_none_or(|until| event.time_ms < until)
                && equal(&request.user_id, &event.user_id)
                && equal(&request.credential_id, &event.credential_id)
                && equal(&request.caller, &event.caller)
                && equal(&request.operation, &event.operation)
        };

        let mut events = Vec::new();
        let mut after = request.after_seq;
        let mut scanned = 0;
        loop {
            let chunk = self.store.audit_events(after, 1000)?;
            let Some(last) = chunk.last() else {
                after = 0;
                break;
            };
            after = last.seq;
            scanned += chunk.len();
            for chained in chunk.iter().filter(|chained| matches(chained)) {
                events.push(to_proto(chained));
                if events.len() == page {
                    after = chained.seq;
                    return Ok(v1::ListAuditEventsResponse {
                        events,
                        next_after_seq: after,
                    });
                }
            }
            if scanned >= SCAN_LIMIT {
                break;
            }
        }
        Ok(v1::ListAuditEventsResponse {
            events,
            next_after_seq: after,
        })
    }

    /// Checks the chain.
    pub(super) async fn verify_audit_chain(&self) -> Result<v1::VerifyAuditResponse, ServiceError> {
        let report = self.store.verify_audit()?;
        let (broken_seq, broken_reason) = report.broken.clone().unwrap_or_default();
        Ok(v1::VerifyAuditResponse {
            checked: report.checked,
            head_seq: report.head.seq,
            head_digest: hex(&report.head.digest),
            intact: report.broken.is_none(),
            broken_seq,
            broken_reason,
            pruned_through: report.pruned_through,
        })
    }
}

fn millis(at: &Timestamp) -> Result<u64, InvalidField> {
    let invalid = || InvalidField::new("since, until", "must be a time from 1970 to year 9999");
    let seconds = u64::try_from(at.seconds).map_err(|_| invalid())?;
    let nanos = u64::try_from(at.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(invalid)?;
    // Year 9999 is far beyond any event, and keeps the sum from overflowing.
    if seconds > 253_402_300_799 {
        return Err(invalid());
    }
    Ok(seconds * 1000 + nanos / 1_000_000)
}

fn to_proto(chained: &ChainedEvent) -> v1::AuditEvent {
    let event = &chained.event;
    v1::AuditEvent {
        seq: chained.seq,
        time: Some(convert::timestamp(UnixMillis(event.time_ms))),
        caller: event.caller.clone(),
        operation: event.operation.clone(),
        purpose: event.purpose.clone(),
        user_id: event.user_id.clone(),
        credential_id: event.credential_id.clone(),
        outcome: event.outcome.clone(),
        request_id: event.request_id.clone(),
        detail: event.detail.clone(),
        digest: hex(&chained.digest),
        prev_digest: hex(&chained.prev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_times_outside_the_calendar_are_refused_not_wrapped() {
        let at = |seconds, nanos| millis(&Timestamp { seconds, nanos });
        assert_eq!(at(1_700_000_000, 5_000_000), Ok(1_700_000_000_005));
        for (seconds, nanos) in [(i64::MAX, 0), (-1, 0), (100, -5), (100, 1_000_000_000)] {
            assert!(at(seconds, nanos).is_err(), "{seconds} {nanos}");
        }
    }
}
