//! Settings that can be swapped while the server runs.

use std::sync::{Arc, PoisonError, RwLock};

/// A shared value that readers take a snapshot of and a reload replaces as
/// a whole. Readers never see a half-updated value, and a snapshot taken
/// before a reload stays valid for as long as its holder keeps it (an
/// established TLS connection keeps the configuration it was accepted with).
#[derive(Debug)]
pub struct Reloadable<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Reloadable<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Reloadable<T> {
    /// Wraps the initial value.
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn current(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave a half-written `Arc`
        // behind, so a poisoned lock still holds a valid value.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the value for every later reader.
    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}
