//! The smallest Listener: an embedded tool that registers an id and answers every
//! reverse connection with a one-line HTTP status, on one thread (an executor run by
//! `block_on` on the main thread), with no public server in the program. Built with
//! the size profile it is what the README's "Embedded footprint" figures measure:
//!
//! ```sh
//! cargo build -p h2rev2-smol --example sensor --profile min-size
//! H2REV2_TOKEN=s3cret target/min-size/examples/sensor https://public.example:9090 sensor-7 \
//!     --ca h2rev2-server.crt
//! curl --cacert h2rev2-server.crt https://public.example:9090/proxy/sensor-7/
//! ```

use std::error::Error;
use std::sync::Arc;

use h2rev2_smol::proto::wire::DialerId;
use h2rev2_smol::tls::{self, ServerTrust};
use h2rev2_smol::{Connector, Listener, ListenerOptions, Spawner};

#[path = "shared/status.rs"]
mod status;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, id, ca) = match args.as_slice() {
        [url, id, flag, ca] if flag == "--ca" => (url, DialerId::new(id.as_str())?, ca),
        _ => {
            eprintln!("usage: sensor URL ID --ca FILE (token from $H2REV2_TOKEN)");
            std::process::exit(2);
        }
    };
    let trust = ServerTrust::from_pem_file(ca.as_ref())?;
    let mut opts = ListenerOptions::new(url, id.clone(), tls::client_config(trust, None)?)?;
    opts.token = std::env::var("H2REV2_TOKEN").ok();
    // Every task on this thread: the executor runs inside `block_on`.
    let ex = Arc::new(smol::Executor::new());
    let spawner = Spawner::from_executor(ex.clone());
    let listener = Listener::connect_with(opts, Connector::tcp(), spawner)?;
    smol::block_on(ex.run(async {
        listener.wait_up().await?;
        eprintln!("{id} registered at {url}");
        loop {
            let conn = listener.accept().await?;
            let id = id.clone();
            ex.spawn(async move {
                if let Err(e) = status::answer(conn, || format!("{id}: ok\n")).await {
                    eprintln!("connection ended: {e}");
                }
            })
            .detach();
        }
    }))
}
