//! A listener's open connections: how many, which are idle, and closing
//! the ones that hold a socket without using it. Both listeners use it:
//! the main one (`--listen`, `crate::listener`) and the gateway
//! (`crate::front::gateway`), each with a registry of its own.
//!
//! A listener that faces the internet must not be starved by clients that
//! open connections and send nothing. So a connection that sends no
//! complete request head within the header timeout, or that stays idle
//! (no request in flight) longer than the idle timeout, is closed by a
//! sweeper; and when the limit is reached, the connection idle the longest
//! is closed to make room for the new one, which is refused only when
//! every open connection has a request in flight. A connection is only
//! ever asked to close: its listener then lets a request that has just
//! begun on it finish (hyper's graceful shutdown), so no request in
//! flight is cut.
//!
//! A request costs two atomic operations here (a reference count taken
//! and given back): the requests in flight on a connection are the
//! references to its [`Use`] beyond the slot's own, and the time a
//! request ended is read from a clock that the sweeper advances, not from
//! the system. Timeouts therefore hold to within a sweep interval or two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How often a listener should call [`Conns::sweep`].
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// What a connection's requests update.
#[derive(Debug)]
struct Use {
    /// Whether a whole request head has arrived on the connection.
    served: AtomicBool,
    /// When the connection opened or its last request ended, in
    /// milliseconds since the registry started.
    last: AtomicU64,
    /// The registry's clock (see [`Conns::tick`]).
    clock: Arc<AtomicU64>,
}

/// One open connection.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    /// Held once by the slot and once by each request in flight.
    used: Arc<Use>,
    /// Notified when the connection is to be closed.
    close: Notify,
}

impl Slot {
    /// Resolves once the registry wants this connection closed.
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    /// Requests in flight on this connection. The count is read without a
    /// lock, so it may be a moment old; a connection asked to close while
    /// a request begins still finishes that request.
    pub fn in_flight(&self) -> usize {
        let count = Arc::strong_count(&self.used).saturating_sub(1);
        // Pairs with the release of the reference that a request gave
        // back, so that `last` as it stored it is seen below.
        fence(Ordering::Acquire);
        count
    }

    /// Whether a request has begun on this connection.
    pub fn served(&self) -> bool {
        self.used.served.load(Ordering::Relaxed)
    }

    fn last(&self) -> u64 {
        self.used.last.load(Ordering::Relaxed)
    }
}

/// A request in flight on a connection; dropped when its response is done.
#[derive(Debug)]
pub struct Active {
    used: Arc<Use>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let now = self.used.clock.load(Ordering::Relaxed);
        self.used.last.store(now, Ordering::Relaxed);
        // The reference itself is given back after this (release).
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
        let used = &self.slot.used;
        if !used.served.load(Ordering::Relaxed) {
            used.served.store(true, Ordering::Relaxed);
        }
        Active {
            used: Arc::clone(used),
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
    /// Milliseconds since `started`, as of the last sweep or admission.
    clock: Arc<AtomicU64>,
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
            clock: Arc::new(AtomicU64::new(0)),
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

    /// Reads the time and advances the clock that requests read when they
    /// end.
    fn tick(&self) -> u64 {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most connections this registry keeps open.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for a new connection: when the registry is full, the
    /// connection idle the longest is told to close and its place given to
    /// this one; `None` when every connection has a request in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let now = self.tick();
        let mut slots = self.lock();
        if slots.len() >= self.max {
            let idlest = slots
                .values()
                .filter(|s| s.in_flight() == 0)
                .min_by_key(|s| s.last())
                .map(|s| s.id);
            let evicted = slots.remove(&idlest?)?;
            evicted.close.notify_one();
        }
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            used: Arc::new(Use {
                served: AtomicBool::new(false),
                last: AtomicU64::new(now),
                clock: Arc::clone(&self.clock),
            }),
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
        let now = self.tick();
        let header = u64::try_from(self.header_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut slots = self.lock();
        slots.retain(|_, slot| {
            if slot.in_flight() > 0 {
                return true;
            }
            let limit = if slot.served() { idle } else { header };
            let overstayed = now.saturating_sub(slot.last()) >= limit;
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

    #[test]
    fn requests_in_flight_are_counted_until_they_end() {
        let conns = Conns::new(10, Duration::from_secs(5), Duration::from_secs(60));
        let a = conns.admit().expect("a");
        assert_eq!(a.slot.in_flight(), 0);
        assert!(!a.slot.served());
        let first = a.begin();
        let second = a.begin();
        assert_eq!(a.slot.in_flight(), 2);
        assert!(a.slot.served());
        drop(first);
        assert_eq!(a.slot.in_flight(), 1);
        drop(second);
        assert_eq!(a.slot.in_flight(), 0);
    }

    #[test]
    fn a_served_connection_gets_the_idle_timeout_not_the_header_timeout() {
        // Header timeout long, idle timeout zero: only the served one goes.
        let conns = Conns::new(10, Duration::from_secs(60), Duration::from_millis(0));
        let silent = conns.admit().expect("silent");
        let used = conns.admit().expect("used");
        drop(used.begin());
        conns.sweep();
        assert!(!futures_like_poll(&silent.slot));
        assert!(futures_like_poll(&used.slot));
        assert_eq!(conns.len(), 1);
    }

    #[test]
    fn a_request_ending_moves_the_connection_to_the_back_of_the_idle_queue() {
        let conns = Conns::new(2, Duration::from_secs(5), Duration::from_secs(60));
        let a = conns.admit().expect("a");
        std::thread::sleep(Duration::from_millis(5));
        let b = conns.admit().expect("b");
        std::thread::sleep(Duration::from_millis(5));
        // a serves a request that ends after b opened: b is now the idlest.
        conns.tick();
        drop(a.begin());
        let _c = conns.admit().expect("c evicts b");
        assert!(futures_like_poll(&b.slot));
        assert!(!futures_like_poll(&a.slot));
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
