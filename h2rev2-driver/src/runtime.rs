//! What a runtime binding supplies: spawning detached tasks, timers and the clock.
//!
//! This is everything the drivers need from an async runtime (channels and the I/O
//! traits are runtime-agnostic). `h2rev2-tokio` implements it over tokio,
//! `h2rev2-smol` over smol/async-io and any executor; a test can implement it over a
//! paused clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A boxed task, as handed to [`Runtime::spawn`].
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A resettable timer: a future that completes at its deadline.
pub trait Timer: Future<Output = ()> + Send + Sync {
    /// Moves the deadline (earlier or later); a completed timer fires again at `at`.
    fn reset(self: Pin<&mut Self>, at: Instant);
}

/// A runtime: where tasks run and how time passes.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `task` to completion in the background, detached. Tasks end by
    /// themselves when what they serve is gone.
    fn spawn(&self, task: Task);

    /// A timer that completes at `at`.
    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>>;

    /// The current time (a runtime with a virtual clock returns its own).
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A shared handle to a [`Runtime`], with the helpers the drivers use.
#[derive(Clone, Debug)]
pub struct Rt(Arc<dyn Runtime>);

impl Rt {
    /// A handle to `runtime`.
    pub fn new(runtime: impl Runtime) -> Rt {
        Rt(Arc::new(runtime))
    }

    /// A handle to a shared runtime.
    pub fn from_arc(runtime: Arc<dyn Runtime>) -> Rt {
        Rt(runtime)
    }

    /// Spawns `fut`, detached.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(Box::pin(fut));
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.0.now()
    }

    /// A timer that completes at `at`.
    pub fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        self.0.timer(at)
    }

    /// Completes after `d`.
    pub async fn sleep(&self, d: Duration) {
        self.timer(self.now() + d).await
    }

    /// `fut`'s output, or `None` when `d` passes first.
    pub async fn timeout<T>(&self, d: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let deadline = self.now() + d;
        self.timeout_at(deadline, fut).await
    }

    /// `fut`'s output, or `None` when `at` passes first.
    pub async fn timeout_at<T>(&self, at: Instant, fut: impl Future<Output = T>) -> Option<T> {
        let timer = self.timer(at);
        tokio::select! {
            biased;
            out = fut => Some(out),
            _ = timer => None,
        }
    }
}

/// One timer reused across the iterations of a driver loop: waiting for a machine's
/// `poll_timeout` moves it instead of allocating and registering a new timer each
/// time.
pub struct Deadline {
    rt: Rt,
    timer: Option<(Pin<Box<dyn Timer>>, Instant)>,
}

impl Deadline {
    /// No deadline yet.
    pub fn new(rt: Rt) -> Deadline {
        Deadline { rt, timer: None }
    }

    /// Completes at `at`, or never when `at` is `None`.
    pub async fn until(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        let rt = &self.rt;
        let (timer, deadline) = self.timer.get_or_insert_with(|| (rt.timer(at), at));
        if *deadline != at {
            timer.as_mut().reset(at);
            *deadline = at;
        }
        timer.as_mut().await;
        // Fired: the next wait re-arms it (a fired timer fires again only once reset).
        self.timer = None;
    }
}

/// [`Rt`] as hyper's executor and timer, so hyper's servers and pooled clients run on
/// any runtime.
impl<F> hyper::rt::Executor<F> for Rt
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            fut.await;
        });
    }
}

/// A [`Timer`] as hyper's `Sleep`.
struct HyperSleep(Pin<Box<dyn Timer>>);

impl Future for HyperSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl hyper::rt::Timer for Rt {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.timer(self.now() + duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep(self.timer(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(mut s) => s.0.as_mut().reset(new_deadline),
            None => *sleep = hyper::rt::Timer::sleep_until(self, new_deadline),
        }
    }
}
