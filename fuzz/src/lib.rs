//! Checks shared by the fuzz targets and the workspace tests.
//!
//! Every public function takes the raw fuzzer input, turns it into a structured input
//! with [`arbitrary`] (exactly as `libfuzzer-sys` does: `arbitrary_take_rest`), and
//! panics when an invariant breaks. The fuzz targets (`fuzz_targets/*.rs`) call them;
//! `h2rev2-proto/tests/fuzz_corpus.rs` includes this file with `#[path]` and replays
//! every file of `corpus/<target>/` through them on each `cargo test`, and
//! `h2rev2-proto/tests/model.rs` drives [`dialer_model`] and [`listener_ops`] from
//! proptest.
//!
//! This library depends only on `h2rev2-proto`, `bytes`, `serde_json` (all of them
//! dependencies of `h2rev2-proto`) and `arbitrary` (a dev-dependency there).

#![allow(dead_code)]

pub mod conn_ops;
pub mod control;
pub mod dialer_model;
pub mod listener_ops;
pub mod route;

use arbitrary::{Arbitrary, Unstructured};

/// Decodes a fuzzer input the way `libfuzzer-sys` does; `None` if it is too short.
pub fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Target `control_decoder`: arbitrary bytes in arbitrary splits.
///
/// Input format (easy to write seeds for): `[repeat] [n] [n cut points, u16 LE]`
/// then the bytes to decode.
pub fn control_decoder(data: &[u8]) {
    control::check(&control::Input::from_bytes(data));
}

/// Target `route_parser`: arbitrary paths, queries and route configurations.
///
/// Input format: text lines `base`, `revdial segment`, `proxy segment`, `id key`,
/// `default id`, `path`, `query`, `listener id`, `role` (`control`, `data` or
/// anything), `conn` token; an empty optional field (default id, query, token) means
/// none, a missing line is empty.
pub fn route_parser(data: &[u8]) {
    route::check(&route::Input::from_bytes(data));
}

/// Target `dialer_ops`: operation sequences against a reference model.
pub fn dialer_ops(data: &[u8]) {
    if let Some(input) = decode(data) {
        dialer_model::check(&input);
    }
}

/// Target `listener_ops`: event sequences for the Listener machine.
pub fn listener_ops(data: &[u8]) {
    if let Some(input) = decode(data) {
        listener_ops::check(&input);
    }
}

/// Target `conn_ops`: read/write/flush/shutdown/reset sequences for `Conn`.
pub fn conn_ops(data: &[u8]) {
    if let Some(input) = decode(data) {
        conn_ops::check(&input);
    }
}
