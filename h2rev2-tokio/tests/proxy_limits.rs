//! Bounded waits on the HTTP proxy (issue 11.3): a backend that does not answer gets
//! the Client a `504` after the response timeout, a body that stops flowing is
//! aborted after the idle timeout, one id takes at most `max_requests_per_id` requests
//! at once (then `503` after a short queue), and an SSE stream is not cut by the
//! response timeout. Each scenario runs on both runtimes' servers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{StatusCode, Version};
use http_body_util::BodyExt;

fn limited(
    tweak: impl FnOnce(&mut h2rev2_tokio::driver::ProxyLimits),
) -> h2rev2_tokio::ServerConfig {
    let mut c = token_config(&[("app", "tok")]);
    tweak(&mut c.proxy);
    c
}

async fn a_backend_that_does_not_answer_gets_504(side: Side) {
    let s = stack_on(
        side,
        limited(|p| p.response_timeout = Duration::from_millis(300)),
        |_| {},
    )
    .await;
    for v in [Version::HTTP_11, Version::HTTP_2] {
        let started = Instant::now();
        let (status, body) = get(s.public.addr, &s.certs, v, "/proxy/app/slow/3000").await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v:?}: {body:?}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "h2rev2: app: the internal server did not answer in time\n"
        );
        assert!(took < Duration::from_secs(2), "{v:?}: 504 after {took:?}");
        // A backend within the timeout is served as usual.
        let (status, _) = get(s.public.addr, &s.certs, v, "/proxy/app/slow/10").await;
        assert_eq!(status, StatusCode::OK);
    }
}
both!(a_backend_that_does_not_answer_gets_504);

async fn sse_is_not_cut_by_the_response_timeout(side: Side) {
    // Events 500 ms apart, a response timeout of 300 ms and a body idle timeout of
    // 300 ms: the stream answered, and event streams are exempt from the idle rule.
    let s = stack_on(
        side,
        limited(|p| {
            p.response_timeout = Duration::from_millis(300);
            p.body_idle_timeout = Duration::from_millis(300);
        }),
        |_| {},
    )
    .await;
    let (status, body) = get(s.public.addr, &s.certs, Version::HTTP_2, "/proxy/app/sse").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    for i in 0..3 {
        assert!(text.contains(&format!("data: event {i}")), "{text}");
    }
}
both!(sse_is_not_cut_by_the_response_timeout);

async fn a_body_that_stops_flowing_is_aborted(side: Side) {
    let s = stack_on(
        side,
        limited(|p| p.body_idle_timeout = Duration::from_millis(300)),
        |_| {},
    )
    .await;
    let url = format!("https://localhost:{}/proxy/app/stall", s.public.addr.port());
    let req = http::Request::get(url).body(empty()).unwrap();
    let resp = request(s.public.addr, &s.certs, Version::HTTP_2, req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the stalled body still open 10 s later");
    assert!(
        body.is_err(),
        "a stalled body must end in an error, not a clean end"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}
both!(a_body_that_stops_flowing_is_aborted);

async fn requests_per_id_are_capped_then_503(side: Side) {
    let s = stack_on(
        side,
        limited(|p| {
            p.max_requests_per_id = 2;
            p.queue_timeout = Duration::from_millis(200);
        }),
        |_| {},
    )
    .await;
    let (addr, certs) = (s.public.addr, &s.certs);
    // Two slow requests hold both permits...
    let slow = || get(addr, certs, Version::HTTP_2, "/proxy/app/slow/1500");
    let third = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let r = get(addr, certs, Version::HTTP_11, "/proxy/app/hello").await;
        (r, started.elapsed())
    };
    let (a, b, ((status, body), took)) = tokio::join!(slow(), slow(), third);
    assert_eq!(a.0, StatusCode::OK);
    assert_eq!(b.0, StatusCode::OK);
    // ...so a third waits the queue timeout and is refused, quickly and clearly.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("too many requests in flight"));
    assert!(took < Duration::from_secs(1), "503 after {took:?}");
    // Once they are done, the id is served again.
    let (status, _) = get(addr, certs, Version::HTTP_11, "/proxy/app/hello").await;
    assert_eq!(status, StatusCode::OK);
}
both!(requests_per_id_are_capped_then_503);

/// One address past its share is served while its id has room (many Clients behind
/// one load balancer or NAT), but never takes the last quarter of the id's slots:
/// those stay for other addresses.
async fn an_address_past_its_share_uses_free_slots_but_not_the_reserve(side: Side) {
    let s = stack_on(
        side,
        limited(|p| {
            p.max_requests_per_id = 8; // 2 kept for addresses within their share
            p.max_requests_per_client = 2;
            p.queue_timeout = Duration::from_millis(200);
        }),
        |_| {},
    )
    .await;
    let (addr, certs) = (s.public.addr, &s.certs);
    let one = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let other = Some(std::net::IpAddr::from([127, 0, 0, 2]));
    // Six slow requests from one address: its 2, and 4 of the id's 6 free slots.
    let slow = || get_from(one, addr, certs, Version::HTTP_11, "/proxy/app/slow/4000");
    let later = |src, path: &'static str| async move {
        // All six are in flight by then (each takes 4 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        get_from(src, addr, certs, Version::HTTP_11, path).await
    };
    let (a, b, c, d, e, f, seventh, from_other) = tokio::join!(
        slow(),
        slow(),
        slow(),
        slow(),
        slow(),
        slow(),
        later(one, "/proxy/app/hello"),
        later(other, "/proxy/app/hello"),
    );
    for (status, body) in [a, b, c, d, e, f] {
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }
    // A seventh from that address would take the reserve: it waits for one of its
    // own, then is refused.
    assert_eq!(seventh.0, StatusCode::TOO_MANY_REQUESTS, "{:?}", seventh.1);
    // Another address gets a reserved slot at once.
    assert_eq!(from_other.0, StatusCode::OK, "{:?}", from_other.1);
}
both!(an_address_past_its_share_uses_free_slots_but_not_the_reserve);

async fn an_upload_that_never_arrives_is_aborted(side: Side) {
    let s = stack_on(
        side,
        limited(|p| p.body_idle_timeout = Duration::from_millis(300)),
        |_| {},
    )
    .await;
    // A POST whose body never comes: headers only, then silence (the sender is kept).
    let (_keep, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, h2rev2_tokio::BoxError>,
    >(1);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let url = format!(
        "https://localhost:{}/proxy/app/sha256",
        s.public.addr.port()
    );
    let req = http::Request::post(url)
        .header("content-length", "1000")
        .body(BodyExt::boxed(body))
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        request(s.public.addr, &s.certs, Version::HTTP_2, req),
    )
    .await
    .expect("the request still held 10 s later");
    // The server gave up on the body: an error answer or a reset, soon.
    if let Ok(resp) = answer {
        assert!(resp.status().is_server_error(), "{}", resp.status());
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing is left in flight on the tunnel for it.
    let (status, _) = get(
        s.public.addr,
        &s.certs,
        Version::HTTP_11,
        "/proxy/app/hello",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
both!(an_upload_that_never_arrives_is_aborted);
