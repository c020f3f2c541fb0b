//! A watched value: the Listener's [`Status`](crate::Status), readable at any time and
//! awaitable on change, with no runtime behind it (event-listener).

use std::sync::Mutex;

use event_listener::Event;

pub(crate) struct Watch<T> {
    value: Mutex<T>,
    changed: Event,
}

impl<T: Clone> Watch<T> {
    pub(crate) fn new(value: T) -> Self {
        Watch {
            value: Mutex::new(value),
            changed: Event::new(),
        }
    }

    pub(crate) fn get(&self) -> T {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = value;
        self.changed.notify(usize::MAX);
    }

    /// Waits until `f` returns `Some` for the current value.
    pub(crate) async fn wait_for<R>(&self, mut f: impl FnMut(&T) -> Option<R>) -> R {
        loop {
            let listener = self.changed.listen();
            if let Some(r) = f(&self.get()) {
                return r;
            }
            listener.await;
        }
    }
}
