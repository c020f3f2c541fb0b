//! # h2rev2-proto: the sans-IO core of h2rev2
//!
//! h2rev2 is a reverse tunnel over HTTP/2, wire-compatible with the Go package
//! `github.com/aojea/h2rev2`. A **Listener** behind a NAT dials out to a public
//! **Dialer** over TLS HTTP/2 and keeps a *control stream* open; the Dialer asks over it
//! for more streams (`conn-ready`), each of which becomes a reverse connection.
//!
//! This crate holds every protocol decision, as deterministic state machines, and does
//! no I/O: no sockets, no clock, no randomness, no async runtime, no HTTP/2 library.
//! Adapters (`h2rev2-tokio`, `h2rev2-smol`) move the bytes.
//!
//! | module | holds |
//! | --- | --- |
//! | [`wire`] | routes, dialer ids, control messages (encoder, incremental decoder) |
//! | [`dialer`] | the public side: sessions, dials, FIFO and token matching, spares |
//! | [`registry`] | id → sessions, with generation-checked keys |
//! | [`listener`] | the NAT side: connect, control, `conn-ready`, spares, backoff |
//! | [`conn`] | one HTTP/2 stream as a byte connection: credit, coalescing, half-close |
//! | [`auth`] | tokens, certificate-bound ids, anonymous mode, takeover rule |
//! | [`cluster`] | which replica of a cluster holds an id: leases, compare-and-delete, lookups |
//! | [`settings`] | HTTP/2 settings every adapter applies (windows, limits, keep-alive) |
//! | [`error`] | errors typed by blame |
//! | [`idle`] | when a server closes an HTTP/2 connection without streams |
//!
//! ## The run loop
//!
//! Each machine takes inputs through `handle_*` (with the current time from outside)
//! and gives outputs through `poll_*`. **After every `handle_*` call, drain
//! `poll_action` until it returns `None`**, carrying out each action in order, then
//! sleep until `poll_timeout` (or the next input) and call `handle_timeout`:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use h2rev2_proto::auth::Credentials;
//! use h2rev2_proto::dialer::{Action, ConnId, DialId, Dialer, DialerConfig, Event, StreamId};
//! use h2rev2_proto::wire::{DialerId, RevdialRequest, Wire};
//!
//! let mut config = DialerConfig::default();
//! config.auth.allow_anonymous();
//! let mut dialer = Dialer::new(config, 42); // the seed comes from outside
//! let now = Instant::now(); // the clock comes from outside
//! let id = DialerId::new("001").unwrap();
//!
//! // A Listener's first revdial stream becomes the session's control stream.
//! dialer.handle_event(now, Event::Revdial {
//!     conn: ConnId(1),
//!     stream: StreamId(1),
//!     request: RevdialRequest { id: id.clone(), role: None, conn: None, wire: Wire::Current },
//!     credentials: Credentials::default(),
//! }).unwrap();
//! // A caller dials the id.
//! dialer.handle_event(now, Event::Dial { dial: DialId(1), id }).unwrap();
//!
//! let mut sent = Vec::new();
//! while let Some(action) = dialer.poll_action() {
//!     match action {
//!         Action::Accept { .. } => { /* answer 200 */ }
//!         Action::SendControl { data, .. } => sent.push(data), // write to the stream
//!         _ => {}
//!     }
//! }
//! assert!(String::from_utf8(sent.concat()).unwrap().contains("conn-ready"));
//! // Sleep until the next timer (a dial deadline or a keep-alive), then:
//! let next = dialer.poll_timeout().unwrap();
//! assert!(next <= now + Duration::from_secs(30));
//! dialer.handle_timeout(next);
//! ```
//!
//! The [`listener::Listener`] and [`conn::Conn`] machines follow the same contract.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod caller;
pub mod cluster;
pub mod conn;
pub mod dialer;
pub mod error;
pub mod idle;
pub mod listener;
pub mod registry;
pub mod settings;
pub mod throttle;
pub mod window;
pub mod wire;

pub use error::{LimitError, Misuse, ProtocolError};
