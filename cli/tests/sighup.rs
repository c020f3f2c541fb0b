//! SIGHUP never ends a server or a client: the server reloads its configuration
//! (cli/tests/reload.rs tests what a reload does), the client logs and ignores it.
//! Through the binary.

mod common;

use std::time::Duration;

use common::*;

const UP: Duration = Duration::from_secs(20);
const SERVER_HUP: &str = "SIGHUP: reloading the configuration";
const RELOADED: &str = "configuration reloaded";
const CLIENT_HUP: &str = "SIGHUP: only `h2rev2 server` reloads its configuration; ignoring";

#[test]
fn sighup_leaves_server_and_client_serving() {
    let mut server = PublicServer::start("web t0k\n", &[]);
    let internal = format!("http://127.0.0.1:{}", start_http());
    let mut client = server.client("web", "t0k", &internal);
    let url = format!("{}/proxy/web/before", server.url);
    curl_until(&["--cacert", &server.cert, &url], "internal ok /before", UP);

    server.proc.signal("HUP");
    server.proc.wait_for(RELOADED, UP);
    client.signal("HUP");
    client.wait_for(CLIENT_HUP, UP);
    // A second one too (a handler that fires once would let it through).
    server.proc.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.proc.running(), "{}", server.proc.stderr());
    assert!(client.running(), "{}", client.stderr());
    assert_eq!(server.proc.stderr().matches(SERVER_HUP).count(), 2);
    assert_eq!(server.proc.stderr().matches(RELOADED).count(), 2);
    // The client's session was never touched.
    assert_eq!(
        client
            .stderr()
            .matches("Serving on Reverse connection")
            .count(),
        1
    );

    let url = format!("{}/proxy/web/after", server.url);
    let (ok, body, err) = curl(&["--cacert", &server.cert, &url]);
    assert!(ok, "{err}");
    assert_eq!(body, "internal ok /after\n");

    // SIGTERM still ends it gracefully.
    server.proc.signal("TERM");
    assert_eq!(server.proc.wait_exit(UP).code(), Some(0));
}
