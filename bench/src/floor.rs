//! The storage floor: bare sled, the same bytes the vault stores, made
//! durable by group commit (many writers, one flush), with no audit chain,
//! no crypto and no network. Two ways to write:
//!
//! - [`Write::Insert`]: one insert of the record;
//! - [`Write::Transaction`]: the record and an audit-sized value in one sled
//!   transaction over two trees, as the vault commits a change with its
//!   event. The gap between the two is sled's transaction cost.
//!
//! As in the vault, one flusher thread runs `flush` and wakes every writer
//! that queued before the flush began. (`flush_async` awaited by several
//! tasks at once can stall forever in sled 0.34.7.)

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread;

use tokio::sync::oneshot;

use crate::drive::{self, Stats, Window};

type Waiter = oneshot::Sender<bool>;

/// How each write reaches sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A plain insert.
    Insert,
    /// A transaction over two trees: the record, and an audit-sized value.
    Transaction,
}

/// Bytes of the second value in [`Write::Transaction`]: about one stored
/// audit event.
const EVENT_LEN: usize = 200;

/// A sled database with its own flusher thread.
#[derive(Debug, Clone)]
pub struct Floor {
    tree: sled::Tree,
    events: sled::Tree,
    waiters: mpsc::Sender<Waiter>,
}

impl Floor {
    /// Opens a fresh database in `dir`, configured as the vault's.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("records")?;
        let events = db.open_tree("events")?;
        let (waiters, queue) = mpsc::channel::<Waiter>();
        thread::Builder::new()
            .name("floor-flusher".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let ok = db.flush().is_ok();
                    for waiter in batch {
                        let _ = waiter.send(ok);
                    }
                }
            })?;
        Ok(Self {
            tree,
            events,
            waiters,
        })
    }

    /// Writes one value and waits until it is durable.
    pub async fn put(&self, write: Write, key: &[u8], value: &[u8]) -> bool {
        let written = match write {
            Write::Insert => self.tree.insert(key, value).is_ok(),
            Write::Transaction => {
                use sled::Transactional as _;
                let event = [0x42u8; EVENT_LEN];
                (&self.tree, &self.events)
                    .transaction(|(tree, events)| {
                        tree.insert(key, value)?;
                        events.insert(key, &event[..])?;
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .is_ok()
            }
        };
        if !written {
            return false;
        }
        let (done, wait) = oneshot::channel();
        if self.waiters.send(done).is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

/// Runs `writers` concurrent durable writers of `value` (each under a new
/// key) on a fresh database in `dir` for `window`.
pub async fn writers(
    dir: &Path,
    write: Write,
    writers: usize,
    value: &[u8],
    window: Window,
) -> Stats {
    let floor = Floor::open(dir).expect("open the floor database");
    let value: Arc<[u8]> = Arc::from(value);
    drive::drive(&[floor], writers, window, move |floor, n| {
        let value = Arc::clone(&value);
        async move { floor.put(write, &n.to_be_bytes(), &value).await }
    })
    .await
}
