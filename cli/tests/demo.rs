//! `h2rev2 demo` answers curl, as the README's first command promises.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn demo_answers_curl() {
    if !have("curl") {
        eprintln!("note: skipped: curl is needed");
        return;
    }
    let mut demo = Proc::h2rev2("demo", &["demo", "--port", "0"], &[]);
    demo.wait_for("Try:", Duration::from_secs(30));
    let out = demo.stdout();
    // The printed commands are run exactly as printed.
    let commands: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(commands.len() >= 2, "{out}");
    for c in commands {
        let args: Vec<&str> = c.split_whitespace().skip(1).collect();
        let body = curl_until(
            &args,
            "Hello from the internal server",
            Duration::from_secs(10),
        );
        assert!(body.contains("h2rev2 reverse connection"), "{body}");
    }
    demo.wait_for(" dial id=", Duration::from_secs(5));
    demo.signal("INT");
    let st = demo.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}");
}

#[test]
fn demo_reports_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let mut demo = Proc::h2rev2("demo-busy", &["demo", "--port", &port], &[]);
    let st = demo.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(5), "exit code 5: cannot listen");
    let err = demo.stderr();
    assert!(err.contains("in use") && err.contains("--port 0"), "{err}");
}
