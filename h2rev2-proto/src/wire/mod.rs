//! The wire format: routes on the public server, dialer ids, and control messages.
//!
//! Everything here is pure: strings and bytes in, typed values or typed errors out.
//! See `PROTOCOL.md` sections 2 and 3; the rules are quoted where they are checked.

mod control;
mod id;
mod route;

pub use control::{Command, ControlMessage, Decoder, MAX_CONTROL_LINE};
pub use id::{DialerId, IdError, MAX_ID_LEN};
pub use route::{
    GO2022_CONTENT_TYPE, MAX_TOKEN_LEN, RevdialRequest, Role, Route, RouteConfig, RouteError, Wire,
};
