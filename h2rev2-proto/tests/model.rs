//! Property tests: the Dialer against a reference model, and the Listener machine on
//! arbitrary event sequences.
//!
//! The model and the checks live in `fuzz/src/` (shared with the fuzz targets
//! `dialer_ops` and `listener_ops`, so the same oracle serves both); this file only
//! generates operation sequences with proptest, which shrinks a failure to a short one.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use checks::dialer_model::{
    ConfigChoice, ControlChoice, CredChoice, Input, Op, RoleChoice, TokenChoice,
};
use checks::listener_ops;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = TokenChoice> {
    prop_oneof![
        3 => Just(TokenChoice::None),
        3 => any::<u8>().prop_map(TokenChoice::OfDial),
        1 => Just(TokenChoice::Bogus),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let role = prop_oneof![
        Just(RoleChoice::None),
        Just(RoleChoice::Control),
        Just(RoleChoice::Data)
    ];
    let cred = prop_oneof![
        1 => Just(CredChoice::None),
        4 => Just(CredChoice::Good),
        1 => Just(CredChoice::Bad)
    ];
    let control = prop_oneof![
        3 => token().prop_map(ControlChoice::PickupFailed),
        1 => Just(ControlChoice::KeepAlive),
        1 => Just(ControlChoice::ConnReady),
        1 => Just(ControlChoice::Unknown),
        1 => Just(ControlChoice::Garbage),
        1 => Just(ControlChoice::Partial),
    ];
    prop_oneof![
        6 => (0..3u8, 0..3u8, role, token(), cred).prop_map(|(conn, id, role, token, cred)| {
            Op::Revdial { conn, id, role, token, cred }
        }),
        6 => (0..3u8).prop_map(|id| Op::Dial { id }),
        1 => any::<u8>().prop_map(|dial| Op::Cancel { dial }),
        3 => (any::<u8>(), control, any::<u8>())
            .prop_map(|(session, msg, split)| Op::Control { session, msg, split }),
        1 => any::<u8>().prop_map(|stream| Op::CloseStream { stream }),
        1 => (0..3u8).prop_map(|conn| Op::CloseConn { conn }),
        2 => prop_oneof![0..50u16, 0..12_000u16].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn config() -> impl Strategy<Value = ConfigChoice> {
    (any::<[u8; 7]>()).prop_map(|b| ConfigChoice {
        anon: b[0],
        max_sessions: b[1],
        max_per_id: b[2],
        max_pending: b[3],
        max_spares: b[4],
        dial_timeout: b[5],
        keepalive: b[6],
    })
}

fn listener_op() -> impl Strategy<Value = listener_ops::Op> {
    use listener_ops::Op as L;
    prop_oneof![
        3 => Just(L::Connected),
        2 => Just(L::ConnectFailed),
        3 => Just(L::ControlAccepted),
        1 => prop_oneof![Just(401u16), Just(409), Just(503), any::<u16>()].prop_map(L::ControlRejected),
        3 => proptest::option::of("[a-f0-9]{0,20}|.{0,200}").prop_map(L::ConnReady),
        1 => Just(L::KeepAlive),
        1 => Just(L::Garbage),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(L::RawControl),
        2 => Just(L::Disconnected),
        2 => any::<u8>().prop_map(L::DataOpened),
        2 => any::<u8>().prop_map(L::DataFailed),
        1 => Just(L::Close),
        3 => prop_oneof![0..1000u32, any::<u32>()].prop_map(L::Advance),
        3 => Just(L::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// No dial answered twice, every dial answered unless cancelled while waiting,
    /// no stream handed out twice, and the counters match the model after each step.
    #[test]
    fn dialer_matches_the_reference_model(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        checks::dialer_model::check(&Input { config, seed, ops });
    }

    /// The Listener never panics, follows its transition table, and its backoff
    /// delays stay inside the capped exponential envelope, never over `backoff_max`.
    #[test]
    fn listener_survives_any_event_sequence(
        mark_roles in any::<bool>(),
        spares in any::<u8>(),
        initial_ms in prop_oneof![0..1000u32, any::<u32>()],
        max_ms in prop_oneof![0..60_000u64, any::<u64>()],
        stable_ms in prop_oneof![0..60_000u32, any::<u32>()],
        max_attempts in proptest::option::of(0..10u8),
        seed in any::<u64>(),
        ops in proptest::collection::vec(listener_op(), 0..60),
    ) {
        listener_ops::check(&listener_ops::Input {
            mark_roles, spares, initial_ms, max_ms, stable_ms, max_attempts, seed, ops,
        });
    }
}

/// A fixed sequence that walks the Dialer through registration, spares, token and FIFO
/// matching, failover and timeouts, so the model is known to run its interesting
/// branches whatever proptest draws.
#[test]
fn model_walkthrough() {
    use CredChoice::Good;
    use RoleChoice::{Control, Data};
    let rd = |conn, id, role, token| Op::Revdial {
        conn,
        id,
        role,
        token,
        cred: Good,
    };
    let ops = vec![
        rd(0, 0, Control, TokenChoice::None),
        rd(1, 0, Control, TokenChoice::None),
        rd(0, 0, Data, TokenChoice::None), // a spare
        Op::Dial { id: 0 },                // takes it, replenishes
        Op::Dial { id: 0 },
        Op::Dial { id: 0 },
        rd(0, 0, Data, TokenChoice::OfDial(1)),
        rd(1, 0, Data, TokenChoice::OfDial(2)),
        Op::Dial { id: 0 },
        Op::Control {
            session: 0,
            msg: ControlChoice::PickupFailed(TokenChoice::None),
            split: 3,
        },
        Op::Dial { id: 0 },
        Op::Dial { id: 0 },
        Op::CloseConn { conn: 1 }, // fail over to the session on conn 0
        rd(2, 0, RoleChoice::None, TokenChoice::None), // authenticated unmarked: replaces
        Op::Advance { ms: 12_000 },
        Op::Dial { id: 1 },
    ];
    checks::dialer_model::check(&Input {
        config: ConfigChoice {
            anon: 0,
            max_sessions: 5,
            max_per_id: 2,
            max_pending: 3,
            max_spares: 2,
            dial_timeout: 4,
            keepalive: 9,
        },
        seed: 1,
        ops,
    });
}

/// Three Listeners hold one id; the one that dies had two dials waiting, which spread
/// over the two others.
#[test]
fn model_failover_spreads() {
    let rd = |conn| Op::Revdial {
        conn,
        id: 0,
        role: RoleChoice::Control,
        token: TokenChoice::None,
        cred: CredChoice::Good,
    };
    let mut ops = vec![rd(0), rd(1), rd(2)];
    ops.extend((0..6).map(|_| Op::Dial { id: 0 }));
    ops.push(Op::CloseConn { conn: 2 });
    checks::dialer_model::check(&Input {
        config: ConfigChoice {
            anon: 0,
            max_sessions: 5,
            max_per_id: 2,
            max_pending: 7,
            max_spares: 0,
            dial_timeout: 0,
            keepalive: 0,
        },
        seed: 2,
        ops,
    });
}
