//! Tenants whose ids look alike (`corp`, `alice@corp`, `CORP`, `corp:1`, `corp%2e`)
//! run side by side through the release binary; each `curl /proxy/{id}/` reaches the
//! internal server of exactly that id, never another tenant's.

mod common;

use common::*;

/// `s` percent-encoded for a path segment (every byte but ASCII letters and digits).
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn look_alike_ids_each_reach_their_own_internal_server() {
    let ids = [
        "corp",
        "alice@corp",
        "CORP",
        "corp:1",
        "corp%2e",
        "u:p@corp:2",
    ];
    let tokens: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id} token-{i}\n"))
        .collect();
    let server = PublicServer::start(&tokens, &[]);
    let (url, cert) = (&server.url, &server.cert);
    let mut clients = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let internal = format!(
            "http://127.0.0.1:{}",
            start_http_named(&format!("backend-of-{id}"))
        );
        clients.push(server.client(id, &format!("token-{i}"), &internal));
    }
    for id in ids {
        let target = format!("{url}/proxy/{}/who", encode(id));
        for http in ["--http1.1", "--http2"] {
            let (ok, body, err) = curl(&["-sS", "--cacert", cert, http, &target]);
            assert!(ok, "curl {target} {http} failed: {err}");
            assert_eq!(
                body,
                format!("backend-of-{id} /who\n"),
                "{target} over {http} reached another tenant"
            );
        }
    }
}
