//! One call being served: its log span, its audit event, its outcome.
//!
//! A [`Call`] is made when a request arrives. The work records what the call
//! is about as it learns it (caller, user, credential, purpose); the span
//! and the audit event get the same fields. A call that changes data has its
//! event written by the store in the same transaction as the change, and is
//! marked recorded; every other call, including every refusal, gets its
//! event when it ends, in [`VaultService::observe`]. Each call ends with
//! exactly one log line giving the outcome and latency.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{Instrument as _, Span, field};

use super::VaultService;
use super::error::ServiceError;
use crate::access::Caller;
use crate::audit::AuditEvent;
use crate::credential::{CredentialId, Purpose, UserId};
use crate::store::{CredentialStore, StoreError};

/// Metadata key a caller may set to name its request in logs and audit.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One call and what is known about it so far.
#[derive(Debug)]
pub struct Call {
    span: Span,
    event: Mutex<AuditEvent>,
    recorded: Mutex<bool>,
}

impl Call {
    /// A call of `operation` for `request`. The request id is the caller's
    /// `x-request-id` when it is 1 to 128 printable characters without
    /// spaces, a fresh random one otherwise.
    pub fn start<T>(operation: &'static str, request: &Request<T>) -> Self {
        let request_id = request
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_graphic()))
            .map_or_else(random_request_id, str::to_owned);
        let span = tracing::info_span!(
            "call",
            op = operation,
            request_id = %request_id,
            caller = field::Empty,
            user_id = field::Empty,
            credential_id = field::Empty,
            purpose = field::Empty,
        );
        let mut event = AuditEvent::now();
        event.operation = operation.to_owned();
        event.request_id = request_id;
        Self {
            span,
            event: Mutex::new(event),
            recorded: Mutex::new(false),
        }
    }

    fn edit(&self, edit: impl FnOnce(&mut AuditEvent)) {
        edit(&mut self.event.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Records who is calling.
    pub fn caller(&self, caller: &Caller) {
        self.span.record("caller", field::display(caller));
        self.edit(|event| event.caller = caller.to_string());
    }

    /// Records the user the call is about.
    pub fn user(&self, owner: &UserId) {
        self.span.record("user_id", field::display(owner));
        self.edit(|event| event.user_id = owner.to_string());
    }

    /// Records the credential the call is about.
    pub fn credential(&self, id: &CredentialId) {
        self.span.record("credential_id", field::display(id));
        self.edit(|event| event.credential_id = id.to_string());
    }

    /// Records the purpose of a decrypt.
    pub fn purpose(&self, purpose: Purpose) {
        self.span
            .record("purpose", field::display(purpose.as_str()));
        self.edit(|event| event.purpose = purpose.as_str().to_owned());
    }

    /// Records a short non-secret detail for the audit event.
    pub fn detail(&self, detail: String) {
        self.edit(|event| event.detail = detail);
    }

    /// The audit event of a successful change, for the store to write with
    /// it.
    pub fn success(&self) -> AuditEvent {
        let mut event = self
            .event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        event.outcome = "Ok".into();
        event
    }

    /// Passes on the result of a store write that was given
    /// [`Call::success`], noting whether that event was committed:
    /// `changed` tells from a successful result, and a change that was
    /// committed but not flushed has it too.
    pub fn wrote<T>(
        &self,
        result: Result<T, StoreError>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        let committed = match &result {
            Ok(value) => changed(value),
            Err(err) => matches!(err, StoreError::NotDurable(_)),
        };
        if committed {
            *self.recorded.lock().unwrap_or_else(PoisonError::into_inner) = true;
        }
        result
    }

    /// Counts the finished call in the metrics, and the secret it handed
    /// out if it was a decrypt that succeeded.
    fn count(&self, outcome: &str, elapsed: std::time::Duration) {
        let event = self.event.lock().unwrap_or_else(PoisonError::into_inner);
        crate::telemetry::call_finished(&event.operation, outcome, elapsed);
        if event.operation == "decrypt" && outcome == "Ok" {
            crate::telemetry::decrypted(&event.purpose, &event.caller);
        }
    }

    fn is_recorded(&self) -> bool {
        *self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self, outcome: &str) -> AuditEvent {
        let mut event = self
            .event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        event.outcome = outcome.to_owned();
        event
    }
}

/// Writes the audit event of a call whose caller went away (a cancelled
/// request or an expired deadline) before the call finished: tonic then
/// drops the call's future, and without this the call would leave no trace.
struct OnCancel<'a, S: CredentialStore> {
    call: &'a Call,
    store: Option<S>,
}

impl<S: CredentialStore> OnCancel<'_, S> {
    fn disarm(mut self) {
        self.store = None;
    }
}

impl<S: CredentialStore> Drop for OnCancel<'_, S> {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        if self.call.is_recorded() {
            return;
        }
        let event = self.call.finished("Cancelled");
        tokio::spawn(async move {
            if let Err(err) = store.append_audit(&event).await {
                tracing::error!(error = %err, "cannot write the audit event of a cancelled call");
            }
        });
    }
}

fn random_request_id() -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Runs one call's work inside its span, writes its audit event unless
    /// the store already did, and logs its outcome and latency.
    pub(super) async fn observe<T>(
        &self,
        call: &Call,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let cancelled = OnCancel {
            call,
            store: Some(self.store.clone()),
        };
        let result = work.instrument(call.span.clone()).await;
        // From here on the event is written below, and the first poll of
        // the append writes it, so a cancellation cannot lose it any more.
        cancelled.disarm();

        let (result, status) = match result {
            Ok(reply) => (Ok(reply), None),
            Err(err) => {
                let status = err.to_status();
                (Err(err), Some(status))
            }
        };
        let outcome = status
            .as_ref()
            .map_or_else(|| "Ok".to_owned(), |status| format!("{:?}", status.code()));
        // No reply leaves before its audit event is on disk: a caller can
        // never hold a secret whose decryption a crash erased from the trail.
        let audit_failed = if call.is_recorded() {
            None
        } else {
            let event = call.finished(&outcome);
            let append = self.store.append_audit(&event);
            append.instrument(call.span.clone()).await.err()
        };
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        call.count(&outcome, started.elapsed());

        // The span is entered only now, with no await left before it ends.
        let _entered = call.span.enter();
        if let Some(err) = audit_failed {
            tracing::error!(error = %err, "cannot write the audit event of a call");
            if result.is_ok() {
                return Err(ServiceError::Store(err).to_status());
            }
        }

        match (result, status) {
            (Ok(reply), _) => {
                tracing::info!(outcome, latency_us, "call finished");
                Ok(Response::new(reply))
            }
            (Err(err), status) => {
                let status = status.unwrap_or_else(|| err.to_status());
                if ServiceError::needs_operator(status.code()) {
                    tracing::error!(outcome, latency_us, error = %err, "call failed");
                } else {
                    tracing::info!(outcome, latency_us, error = %err, "call refused");
                }
                Err(status)
            }
        }
    }
}
