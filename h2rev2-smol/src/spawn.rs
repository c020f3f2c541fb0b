//! Where the adapter's background tasks run.
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

/// A boxed task, as handed to a [`Spawner`].
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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
