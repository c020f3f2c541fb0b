//! One waker for a conn's send progress, for its reader and its writer.

/// Which side of a conn is waiting on send progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A pending read (reads also drive buffered writes out).
    Reader,
    /// A pending write, flush or shutdown.
    Writer,
}

/// One waker for a conn's send progress that wakes both its reader and its writer.
///
/// h2 keeps a single waker per stream for send capacity, and the reader and the writer
/// of a conn (two tasks, with `split`) both drive the send side. Registering this
/// waker instead of either task's own means neither is forgotten. It holds no I/O and
/// no runtime: plain `std::task` plumbing (moved here from the core, which decides and
/// has no wakers).
///
/// ```
/// use std::sync::Arc;
/// use std::task::Waker;
/// use h2rev2_driver::wake::{Side, WakeBoth};
/// let both = Arc::new(WakeBoth::default());
/// both.register(Side::Reader, Waker::noop());
/// both.register(Side::Writer, Waker::noop());
/// Waker::from(both).wake(); // wakes both
/// ```
#[derive(Debug, Default)]
pub struct WakeBoth {
    reader: std::sync::Mutex<Option<std::task::Waker>>,
    writer: std::sync::Mutex<Option<std::task::Waker>>,
}

impl WakeBoth {
    /// Remembers `waker` as `side`'s (replacing an older one).
    pub fn register(&self, side: Side, waker: &std::task::Waker) {
        let slot = match side {
            Side::Reader => &self.reader,
            Side::Writer => &self.writer,
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl std::task::Wake for WakeBoth {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        for slot in [&self.reader, &self.writer] {
            if let Some(w) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }
}
