//! Group commit: many writers, one flush.
//!
//! A write is acknowledged only once it is on disk, and a sled flush costs a
//! sync of the log. Flushing once per write would cap the store at one
//! fsync per acknowledgement; instead every writer that wants durability
//! queues a waiter, and one flusher thread takes every waiter queued so far,
//! flushes once, and wakes them all. A waiter queued while a flush is running
//! waits for the next one, because that flush may have started before its
//! write.
//!
//! The flush runs on its own OS thread, not as `flush_async` inside the
//! runtime: sled 0.34.7's `flush_async` awaited by several tasks at once can
//! stall forever, and a blocking flush must not occupy a runtime worker.

use std::sync::{Arc, mpsc};
use std::thread;

use tokio::sync::oneshot;

/// Result of one flush, shared by every waiter it covered.
pub type FlushResult = Result<(), Arc<sled::Error>>;

/// Handle to the flusher thread, cheap to clone. When the last handle is
/// dropped the thread is stopped and joined, so that it no longer holds the
/// database open (sled locks its folder while any handle lives).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    flusher: Arc<Flusher>,
}

#[derive(Debug)]
struct Flusher {
    waiters: Option<mpsc::Sender<oneshot::Sender<FlushResult>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (waiters, queue) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("vault-flusher".into())
            .spawn(move || flush_loop(&db, &queue))?;
        Ok(Self {
            flusher: Arc::new(Flusher {
                waiters: Some(waiters),
                thread: Some(thread),
            }),
        })
    }

    /// Waits until everything written before this call is durable.
    pub async fn durable(&self) -> FlushResult {
        let (done, wait) = oneshot::channel();
        let queued = self
            .flusher
            .waiters
            .as_ref()
            .is_some_and(|waiters| waiters.send(done).is_ok());
        if !queued {
            return Err(Arc::new(stopped()));
        }
        wait.await.unwrap_or_else(|_| Err(Arc::new(stopped())))
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the queue ends the loop once it has answered every waiter.
        drop(self.waiters.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the flusher thread panicked");
        }
    }
}

fn stopped() -> sled::Error {
    sled::Error::Io(std::io::Error::other("the flusher thread has stopped"))
}

fn flush_loop(db: &sled::Db, queue: &mpsc::Receiver<oneshot::Sender<FlushResult>>) {
    // `recv` fails only once every sender is gone: the store has shut down.
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());

        let result = db.flush().map(drop).map_err(Arc::new);
        if let Err(err) = &result {
            tracing::error!(error = %err, waiters = batch.len(), "flush failed");
        }
        for waiter in batch {
            // A waiter whose call was cancelled has gone away; nothing to tell it.
            let _ = waiter.send(result.clone());
        }
    }
}
