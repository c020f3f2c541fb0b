//! SIGHUP never ends a server or a client (live reload is not implemented yet: it is
//! logged and ignored). Through the release binary.

mod common;

use std::time::Duration;

use common::*;

const UP: Duration = Duration::from_secs(20);
const HUP_LINE: &str = "SIGHUP: reload is not supported yet; ignoring";

#[test]
fn sighup_leaves_server_and_client_serving() {
    let mut server = PublicServer::start("web t0k\n", &[]);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = server.client("web", "t0k", &internal);
    let url = format!("{}/proxy/web/before", server.url);
    curl_until(&["--cacert", &server.cert, &url], "internal ok /before", UP);

    server.proc.signal("HUP");
    server.proc.wait_for(HUP_LINE, UP);
    client.signal("HUP");
    client.wait_for(HUP_LINE, UP);
    // A second one too (a handler that fires once would let it through).
    server.proc.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.proc.running(), "{}", server.proc.stderr());
    assert!(client.running(), "{}", client.stderr());
    assert_eq!(server.proc.stderr().matches(HUP_LINE).count(), 2);

    let url = format!("{}/proxy/web/after", server.url);
    let (ok, body, err) = curl(&["--cacert", &server.cert, &url]);
    assert!(ok, "{err}");
    assert_eq!(body, "internal ok /after\n");

    // SIGTERM still ends it gracefully.
    server.proc.signal("TERM");
    assert_eq!(server.proc.wait_exit(UP).code(), Some(0));
}
