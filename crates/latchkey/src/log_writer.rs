//! Where the log's lines go: stderr, with the lines of INFO and below
//! gathered and written together.
//!
//! A `write` system call per line was the largest single cost of an
//! access-log line, which every management request writes
//! (docs/BENCHMARKS.md). Lines of INFO, DEBUG and TRACE are appended to one
//! buffer, which is written out when it holds [`BATCH_BYTES`], when a
//! worker thread of the runtime runs out of tasks (it is about to park,
//! see `main.rs`; it does not wait if another thread is writing), at least
//! every [`FLUSH_INTERVAL`], before a panic's message (unless another
//! thread is writing at that moment) and when the process exits, also by
//! a panic. A WARN or ERROR line is written at once, after the lines
//! gathered before it, so the order of lines is kept. What a process that
//! dies without unwinding (SIGKILL, the OOM killer, an abort) can lose is
//! the INFO lines of its last [`FLUSH_INTERVAL`] while it was busy; the
//! store's data does not go through here.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Gathered lines are written out once they reach this size.
pub const BATCH_BYTES: usize = 16 * 1024;
/// Gathered lines wait at most this long (the flusher thread's period).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The log's [`MakeWriter`]; clones share one buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    /// Whether lines are gathered (read without the lock by
    /// [`LogWriter::flush_if_waiting`], on every park of a worker).
    waiting: AtomicBool,
    gathered: Mutex<Gathered>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

struct Gathered {
    pending: Vec<u8>,
    sink: Box<dyn Write + Send>,
}

impl Gathered {
    fn write_out(&mut self, waiting: &AtomicBool) {
        waiting.store(false, Ordering::Relaxed);
        if self.pending.is_empty() {
            return;
        }
        // A log that cannot be written is not a reason to stop serving;
        // the lines are dropped rather than kept without bound.
        let _ = self.sink.write_all(&self.pending);
        let _ = self.sink.flush();
        self.pending.clear();
    }
}

impl LogWriter {
    /// A writer to the process's stderr.
    pub fn stderr() -> Self {
        Self::to(Box::new(io::stderr()))
    }

    fn to(sink: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Shared {
                waiting: AtomicBool::new(false),
                gathered: Mutex::new(Gathered {
                    pending: Vec::with_capacity(BATCH_BYTES * 2),
                    sink,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gathered> {
        // Nothing panics while holding the lock; if something did, the
        // buffer is still a sequence of whole lines.
        self.shared
            .gathered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out the gathered lines.
    pub fn flush(&self) {
        self.lock().write_out(&self.shared.waiting);
    }

    /// Writes out the gathered lines if there are any and no other thread
    /// is writing (whose write takes them along). For a worker about to
    /// park, which must not wait for another thread's write, and for the
    /// panic hook: a panic on the thread that holds the lock must not wait
    /// for itself.
    pub fn flush_if_waiting(&self) {
        if !self.shared.waiting.load(Ordering::Relaxed) {
            return;
        }
        let mut gathered = match self.shared.gathered.try_lock() {
            Ok(gathered) => gathered,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        gathered.write_out(&self.shared.waiting);
    }

    /// Starts the thread that writes out gathered lines every
    /// [`FLUSH_INTERVAL`], for the life of the process.
    pub fn spawn_flusher(&self) -> io::Result<()> {
        let writer = self.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    writer.flush();
                }
            })
            .map(drop)
    }
}

/// The writer of one line.
#[derive(Debug)]
pub struct LineWriter<'a> {
    owner: &'a LogWriter,
    /// WARN and ERROR: written at once.
    at_once: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut gathered = self.owner.lock();
        gathered.pending.extend_from_slice(buf);
        if self.at_once || gathered.pending.len() >= BATCH_BYTES {
            gathered.write_out(&self.owner.shared.waiting);
        } else {
            self.owner.shared.waiting.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.at_once {
            self.owner.flush();
        }
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            owner: self,
            at_once: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            owner: self,
            at_once: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose contents the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("sink lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("sink lock").clone()).expect("utf-8")
        }
    }

    fn writer() -> (LogWriter, Shared) {
        let sink = Shared::default();
        (LogWriter::to(Box::new(sink.clone())), sink)
    }

    fn line(w: &LogWriter, at_once: bool, text: &str) {
        let mut line = LineWriter { owner: w, at_once };
        line.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn info_lines_wait_for_a_flush() {
        let (w, sink) = writer();
        line(&w, false, "a\n");
        line(&w, false, "b\n");
        assert_eq!(sink.text(), "");
        w.flush();
        assert_eq!(sink.text(), "a\nb\n");
        w.flush();
        assert_eq!(sink.text(), "a\nb\n", "a second flush writes nothing again");
    }

    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let (w, sink) = writer();
        line(&w, false, "info 1\n");
        line(&w, true, "warn\n");
        assert_eq!(sink.text(), "info 1\nwarn\n");
        line(&w, false, "info 2\n");
        assert_eq!(sink.text(), "info 1\nwarn\n");
    }

    #[test]
    fn a_full_batch_is_written_without_a_flush() {
        let (w, sink) = writer();
        let text = "x".repeat(99) + "\n";
        let lines = BATCH_BYTES / text.len();
        for _ in 0..lines {
            line(&w, false, &text);
        }
        assert_eq!(sink.text(), "", "below the batch size nothing is written");
        line(&w, false, &text);
        assert_eq!(sink.text().len(), (lines + 1) * text.len());
    }

    #[test]
    fn the_level_decides_what_is_written_at_once() {
        let (w, sink) = writer();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(w.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("first");
            tracing::debug!("second");
            assert_eq!(sink.text(), "");
            tracing::warn!("third");
            assert!(sink.text().contains("third"), "a warning waited");
            tracing::trace!("fourth");
            tracing::error!("fifth");
        });
        let text = sink.text();
        let order: Vec<&str> = ["first", "second", "third", "fourth", "fifth"]
            .iter()
            .map(|word| {
                assert!(text.contains(word), "{word} missing from {text:?}");
                *word
            })
            .collect();
        let positions: Vec<usize> = order.iter().filter_map(|w| text.find(w)).collect();
        assert!(
            positions.windows(2).all(|p| p[0] < p[1]),
            "lines out of order: {text:?}"
        );
    }

    #[test]
    fn the_flush_on_park_does_not_wait_for_a_held_lock() {
        let (w, sink) = writer();
        w.flush_if_waiting();
        line(&w, false, "before\n");
        {
            let _held = w.lock();
            w.flush_if_waiting();
        }
        assert_eq!(sink.text(), "", "skipped while the lock was held");
        w.flush_if_waiting();
        assert_eq!(sink.text(), "before\n");
        line(&w, true, "warn\n");
        assert!(
            !w.shared.waiting.load(Ordering::Relaxed),
            "nothing waits after a line written at once"
        );
    }

    #[test]
    fn the_flusher_writes_gathered_lines_within_its_interval() {
        let (w, sink) = writer();
        w.spawn_flusher().expect("flusher thread");
        line(&w, false, "later\n");
        let deadline = std::time::Instant::now() + FLUSH_INTERVAL * 50;
        while sink.text().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.text(), "later\n");
    }
}
