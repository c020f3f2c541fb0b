//! Where the adapter's background tasks run, and smol as the drivers' runtime.
//!
//! The adapter spawns a few detached tasks (a driver, one per HTTP/2 connection, one
//! per control stream). A [`Spawner`] says where: smol's global executor by default,
//! an [`smol::Executor`] of yours, or any executor's spawn function (async-std's
//! `task::spawn`, a `futures::executor::ThreadPool`...). Tasks never need a particular
//! reactor: timers and sockets are async-io's, which runs its own driver when no
//! `block_on` of async-io drives it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub use h2rev2_driver::runtime::Task;
use h2rev2_driver::runtime::{Rt, Runtime, Timer};

/// Runs the adapter's background tasks, detached. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use h2rev2_smol::Spawner;
///
/// let global = Spawner::default(); // smol::spawn(..).detach()
/// let ex = Arc::new(smol::Executor::new());
/// let mine = Spawner::from_executor(ex.clone()); // run `ex` yourself
/// let any = Spawner::new(|task| {
///     std::thread::spawn(move || smol::block_on(task)); // any executor will do
/// });
/// # let _ = (global, mine, any);
/// ```
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

impl Default for Spawner {
    /// smol's global executor (`smol::spawn`), whose threads start on first use
    /// (`SMOL_THREADS`, default 1).
    fn default() -> Self {
        Spawner::new(|task| smol::spawn(task).detach())
    }
}

impl Spawner {
    /// A spawner calling `spawn` with each task; the task must be polled to completion
    /// (it ends by itself when the Listener or server it belongs to is gone).
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Spawner(Arc::new(spawn))
    }

    /// Tasks run on `executor`, which the caller runs (`executor.run(..)` on some
    /// threads). The spawner keeps the executor alive.
    pub fn from_executor(executor: Arc<smol::Executor<'static>>) -> Self {
        Spawner::new(move |task| executor.spawn(task).detach())
    }

    /// Spawns `fut`, detached.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(fut))
    }
}

/// async-io's timer as the drivers' [`Timer`].
struct SmolTimer(smol::Timer);

impl Future for SmolTimer {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Timer for SmolTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.0.set_at(at);
    }
}

/// The drivers' runtime: tasks through the spawner, timers from async-io (whose
/// reactor runs by itself: no particular executor is needed).
impl Runtime for Spawner {
    fn spawn(&self, task: Task) {
        (self.0)(task)
    }

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(SmolTimer(smol::Timer::at(at)))
    }
}

impl Spawner {
    /// As the drivers' runtime handle.
    pub fn rt(&self) -> Rt {
        Rt::new(self.clone())
    }
}
