//! A proxied request reaches exactly the session of the id it names, byte for byte,
//! for every id that `DialerId` accepts: look-alikes (`alice@corp` beside `corp`, `DB`
//! beside `db`, `db:1`, percent signs, non-ASCII) are different tenants.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2rev2_tokio::proto::wire::DialerId;
use h2rev2_tokio::{Listener, ServerConfig};
use http::{Response, Version};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;

/// Serves, on every conn of `listener`, an HTTP/1.1 server that answers with the id it
/// registered as and the `Host` it was sent.
fn answer_as(listener: Listener, id: DialerId) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            let id = id.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .map(|h| h.as_bytes().to_vec())
                        .unwrap_or_default();
                    let body = Bytes::from(id.as_str().as_bytes().to_vec());
                    let resp = Response::builder()
                        .header("x-host", http::HeaderValue::from_bytes(&host).unwrap())
                        .body(Full::new(body))
                        .unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    })
}

/// `s` percent-encoded for a path segment (every byte but ASCII letters and digits).
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One public server in anonymous mode; for each set of ids, one Listener per id, then
/// every id requested over HTTP/1.1 and HTTP/2 must be answered by its own Listener.
fn check_sets(sets: Vec<BTreeSet<String>>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let certs = Certs::new();
        let mut config = ServerConfig::default();
        config.dialer.auth.allow_anonymous();
        let public = start_public(&certs, config).await;
        for ids in sets {
            let mut tasks = Vec::new();
            for name in &ids {
                let opts = listener_opts(&public, &certs, name, None);
                let listener = bind_listener(opts);
                tokio::time::timeout(Duration::from_secs(10), listener.wait_up())
                    .await
                    .expect("Listener up within 10 s")
                    .unwrap();
                tasks.push(answer_as(listener, id(name)));
            }
            for name in &ids {
                let path = format!("/proxy/{}/who", encode(name));
                for v in [Version::HTTP_11, Version::HTTP_2] {
                    let (status, body) = get(public.addr, &certs, v, &path).await;
                    assert_eq!(status, 200, "{name:?} over {v:?}: {body:?}");
                    assert_eq!(
                        String::from_utf8_lossy(&body),
                        name.as_str(),
                        "{path} over {v:?} was answered by another id's Listener"
                    );
                }
            }
            for t in tasks {
                t.abort();
            }
            wait_sessions(&public.server, 0).await;
        }
    });
}

/// Ids that a URI authority or a case-insensitive pool would confuse.
fn look_alikes(base: String) -> BTreeSet<String> {
    [
        base.clone(),
        base.to_uppercase(),
        format!("alice@{base}"),
        format!("{base}:80"),
        format!("{base}%40x"),
        format!("{base}."),
        format!("[{base}]"),
        format!("{base}?q"),
        format!("{base}#f"),
    ]
    .into_iter()
    .filter(|s| DialerId::new(s.as_str()).is_ok())
    .collect()
}

#[test]
fn look_alike_ids_side_by_side_each_reach_their_own_listener() {
    init_tracing();
    check_sets(vec![
        look_alikes("corp".into()),
        [
            "db", "DB", "Db", "db:1", "u:p@db", "db%2F", "dé", "d\u{e9}b", "日本",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ]);
}

/// Any printable non-space character but `/`, some of them non-ASCII.
fn id_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => proptest::char::range('!', '~').prop_filter("no slash", |c| *c != '/'),
        1 => prop::sample::select(vec!['é', 'Ω', '日', 'ß', '\u{130}', 'ǅ']),
    ]
}

fn id_string() -> impl Strategy<Value = String> {
    prop::collection::vec(id_char(), 1..10).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// An id requested == the id of the session that answered, over the whole id
    /// alphabet, with each generated id registered beside its look-alikes.
    #[test]
    fn the_id_requested_is_the_id_that_answers(base in id_string(), more in prop::collection::btree_set(id_string(), 0..4)) {
        let mut ids = look_alikes(base);
        ids.extend(more);
        check_sets(vec![ids]);
    }
}
