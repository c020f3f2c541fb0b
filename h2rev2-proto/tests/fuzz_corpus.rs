//! Replays every committed fuzz input (`fuzz/corpus/<target>/` seeds and
//! `fuzz/regressions/<target>/` crash reproductions) through the same checks the fuzz
//! targets run, so each `cargo test` guards what fuzzing found.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut seeds = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            eprintln!("replaying {}", f.display());
            check(&data);
            if dir == "corpus" {
                seeds += 1;
            }
        }
    }
    assert!(seeds >= 3, "the seed corpus of {target} is missing");
}

#[test]
fn control_decoder() {
    replay("control_decoder", checks::control_decoder);
}

#[test]
fn route_parser() {
    replay("route_parser", checks::route_parser);
}

#[test]
fn dialer_ops() {
    replay("dialer_ops", checks::dialer_ops);
}

#[test]
fn listener_ops() {
    replay("listener_ops", checks::listener_ops);
}

#[test]
fn conn_ops() {
    replay("conn_ops", checks::conn_ops);
}

/// Prints what each structured seed decodes to (`cargo test --test fuzz_corpus
/// describe -- --ignored --nocapture`), to check seeds written with
/// `fuzz/make_seeds.py`.
#[test]
#[ignore]
fn describe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in ["dialer_ops", "listener_ops", "conn_ops"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let shown = match target {
                "dialer_ops" => {
                    format!("{:?}", checks::decode::<checks::dialer_model::Input>(&data))
                }
                "listener_ops" => {
                    format!("{:?}", checks::decode::<checks::listener_ops::Input>(&data))
                }
                _ => format!("{:?}", checks::decode::<checks::conn_ops::Input>(&data)),
            };
            println!("{}: {shown}", f.display());
        }
    }
}
