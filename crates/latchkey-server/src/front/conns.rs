//! The gateway's open connections: how many, which are idle, and closing
//! the ones that hold a socket without using it.
//!
//! A listener that faces the internet must not be starved by clients that
//! open connections and send nothing. So a connection that sends no
//! complete request head within the header timeout, or that stays idle
//! (no request in flight) longer than the idle timeout, is closed by a
//! sweeper; and when the limit is reached, the connection idle the longest
//! is closed to make room for the new one, which is refused only when
//! every open connection has a request in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One open connection.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    /// Requests in flight (head read, response body not yet finished).
    active: AtomicUsize,
    /// Requests started on this connection.
    served: AtomicU64,
    /// When it opened or its last request ended, in milliseconds since the
    /// registry started.
    last: AtomicU64,
    /// Notified when the connection is to be closed.
    close: Notify,
}

impl Slot {
    /// Resolves once the registry wants this connection closed.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

/// A request in flight on a connection; dropped when its response is done.
#[derive(Debug)]
pub struct Active {
    slot: Arc<Slot>,
    conns: Arc<Conns>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.slot.last.store(self.conns.now_ms(), Ordering::Relaxed);
        self.slot.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds a connection's place in the registry; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    pub slot: Arc<Slot>,
    conns: Arc<Conns>,
}

impl Admitted {
    /// Marks a request as started; its end is when the returned value is
    /// dropped.
    pub fn begin(&self) -> Active {
        self.slot.active.fetch_add(1, Ordering::AcqRel);
        self.slot.served.fetch_add(1, Ordering::Relaxed);
        Active {
            slot: Arc::clone(&self.slot),
            conns: Arc::clone(&self.conns),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.slot.id);
    }
}

/// The registry of one listener's connections.
#[derive(Debug)]
pub struct Conns {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    started: Instant,
    max: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Conns {
    pub fn new(max: usize, header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
            max: max.max(1),
            header_timeout,
            idle_timeout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a new connection: when the registry is full, the
    /// connection idle the longest is told to close and its place given to
    /// this one; `None` when every connection has a request in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let now = self.now_ms();
        let mut slots = self.lock();
        if slots.len() >= self.max {
            let idlest = slots
                .values()
                .filter(|s| s.active.load(Ordering::Acquire) == 0)
                .min_by_key(|s| s.last.load(Ordering::Relaxed))
                .map(|s| s.id);
            let evicted = slots.remove(&idlest?)?;
            evicted.close.notify_one();
        }
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            last: AtomicU64::new(now),
            close: Notify::new(),
        });
        slots.insert(slot.id, Arc::clone(&slot));
        Some(Admitted {
            slot,
            conns: Arc::clone(self),
        })
    }

    /// Tells the connections that overstayed to close: idle ones that never
    /// sent a whole request head within the header timeout, and idle ones
    /// whose last request ended longer ago than the idle timeout.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let header = u64::try_from(self.header_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut slots = self.lock();
        slots.retain(|_, slot| {
            if slot.active.load(Ordering::Acquire) > 0 {
                return true;
            }
            let limit = if slot.served.load(Ordering::Relaxed) == 0 {
                header
            } else {
                idle
            };
            let overstayed = now.saturating_sub(slot.last.load(Ordering::Relaxed)) >= limit;
            if overstayed {
                slot.close.notify_one();
            }
            !overstayed
        });
    }

    /// Tells every connection to close (shutdown).
    pub fn close_all(&self) {
        for slot in self.lock().values() {
            slot.close.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_registry_evicts_the_longest_idle_connection() {
        let conns = Conns::new(2, Duration::from_secs(5), Duration::from_secs(60));
        let a = conns.admit().expect("a");
        std::thread::sleep(Duration::from_millis(5));
        let b = conns.admit().expect("b");
        let c = conns.admit().expect("c evicts a");
        assert_eq!(conns.len(), 2);
        // a was told to close (a stored permit), b and c were not.
        let waker = futures_like_poll(&a.slot);
        assert!(waker, "a told to close");
        assert!(!futures_like_poll(&b.slot));
        assert!(!futures_like_poll(&c.slot));
    }

    #[test]
    fn busy_connections_are_not_evicted() {
        let conns = Conns::new(2, Duration::from_secs(5), Duration::from_secs(60));
        let a = conns.admit().expect("a");
        let b = conns.admit().expect("b");
        let _ra = a.begin();
        let rb = b.begin();
        assert!(conns.admit().is_none(), "every connection busy");
        drop(rb);
        let _c = conns.admit().expect("b is idle again");
        assert!(futures_like_poll(&b.slot));
        assert!(!futures_like_poll(&a.slot));
    }

    #[test]
    fn the_sweeper_closes_silent_and_idle_connections_only() {
        let conns = Conns::new(10, Duration::from_millis(0), Duration::from_secs(60));
        let silent = conns.admit().expect("silent");
        let used = conns.admit().expect("used");
        drop(used.begin());
        let busy = conns.admit().expect("busy");
        let _r = busy.begin();
        conns.sweep();
        assert!(futures_like_poll(&silent.slot));
        assert!(!futures_like_poll(&used.slot), "idle timeout not reached");
        assert!(!futures_like_poll(&busy.slot));
        assert_eq!(conns.len(), 2);
    }

    #[test]
    fn dropping_a_connection_frees_its_place() {
        let conns = Conns::new(1, Duration::from_secs(5), Duration::from_secs(60));
        let a = conns.admit().expect("a");
        drop(a);
        assert!(conns.is_empty());
        let _b = conns.admit().expect("b");
        assert_eq!(conns.len(), 1);
    }

    /// Whether the slot holds a close permit (polls `closed` once).
    fn futures_like_poll(slot: &Slot) -> bool {
        let fut = std::pin::pin!(slot.closed());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        fut.poll(&mut cx).is_ready()
    }

    use std::future::Future;
}
