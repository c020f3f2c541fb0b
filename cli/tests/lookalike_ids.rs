//! Tenants whose ids look alike (`corp`, `alice@corp`, `CORP`, `corp:1`, `corp%2e`)
//! run side by side through the release binary; each `curl /proxy/{id}/` reaches the
//! internal server of exactly that id, never another tenant's.

mod common;

use std::time::Duration;

use common::*;

/// `s` percent-encoded for a path segment (every byte but the unreserved ones).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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
    let dir = tempfile::tempdir().unwrap();
    let tokens: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id} token-{i}\n"))
        .collect();
    let tokens = write_file(dir.path(), "tokens.txt", &tokens);
    let cert = dir.path().join("server.crt").display().to_string();
    let mut server = Proc::h2rev2(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--cert-out",
            &cert,
            "--tokens",
            &tokens.display().to_string(),
        ],
        &[],
    );
    let public = server.wait_value_after("Serving on https://", Duration::from_secs(20));
    let url = format!("https://{public}");
    let mut clients = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let internal = format!(
            "http://127.0.0.1:{}",
            start_http_named(&format!("backend-of-{id}"))
        );
        let token = format!("token-{i}");
        let mut c = Proc::h2rev2(
            &format!("client {id}"),
            &[
                "client",
                "--server",
                &url,
                "--ca",
                &cert,
                "--id",
                id,
                "--proxy-host",
                &internal,
            ],
            &[("H2REV2_TOKEN", &token)],
        );
        c.wait_for("Serving on Reverse connection", Duration::from_secs(20));
        clients.push(c);
    }
    for id in ids {
        let target = format!("{url}/proxy/{}/who", encode(id));
        for http in ["--http1.1", "--http2"] {
            let (ok, body, err) = curl(&["-sS", "--cacert", &cert, http, &target]);
            assert!(ok, "curl {target} {http} failed: {err}");
            assert_eq!(
                body,
                format!("backend-of-{id} /who\n"),
                "{target} over {http} reached another tenant"
            );
        }
    }
}
