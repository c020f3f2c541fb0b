//! The cluster registry's store on Redis (the `redis` crate, tokio): one key per id
//! with a lease (`PX`), compare-and-expire and compare-and-delete as Lua scripts (one
//! atomic step each), announcements on a pub/sub channel.
//!
//! ```no_run
//! # async fn run(server: h2rev2_tokio::Server, peer_tls: std::sync::Arc<rustls::ClientConfig>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use h2rev2_tokio::driver::cluster::ClusterConfig;
//! use h2rev2_tokio::proto::cluster::Config;
//! use h2rev2_tokio::redis_store::RedisStore;
//!
//! let store = Arc::new(RedisStore::new("redis://127.0.0.1:6379")?);
//! let config = ClusterConfig::new(
//!     Config::new("replica-1", "https://10.0.0.1:9090"),
//!     "cluster-secret",
//!     peer_tls,
//! );
//! server.join_cluster(store, config, Arc::new(h2rev2_tokio::Connector::default()), 1)?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use h2rev2_driver::cluster::{ClusterStore, StoreFuture};
use h2rev2_proto::cluster::{CHANNEL, Op, Outcome};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::debug;

/// Renews the key if it holds our value (1), writes it if it is gone (2), or leaves
/// another replica's value alone (0).
const REFRESH: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], KEYS[1])
  return 2
end
return 0
"#;

/// Deletes the key only if it holds our value.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
"#;

/// A [`ClusterStore`] on a Redis server. Nothing is connected until the first
/// operation; a lost connection is made again by the next one, so a server starts
/// (and its local sessions serve) while Redis is down.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: std::sync::Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    refresh: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://host:port[/db]`, `rediss://` for TLS).
    pub fn new(url: &str) -> Result<RedisStore, redis::RedisError> {
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            conn: Default::default(),
            refresh: redis::Script::new(REFRESH),
            release: redis::Script::new(RELEASE),
        })
    }

    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let mut held = self.conn.lock().await;
        if let Some(c) = &*held {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2));
        let c = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn run_op(&self, op: Op) -> redis::RedisResult<Outcome> {
        let mut c = self.conn().await?;
        Ok(match op {
            Op::Register {
                key, value, lease, ..
            } => {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("PX")
                    .arg(lease.as_millis() as u64)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(&key)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await?;
                Outcome::Done
            }
            Op::Refresh {
                key, value, lease, ..
            } => {
                let n: i64 = self
                    .refresh
                    .key(&key)
                    .arg(&value)
                    .arg(lease.as_millis() as u64)
                    .arg(CHANNEL)
                    .invoke_async(&mut c)
                    .await?;
                match n {
                    1 => Outcome::Renewed,
                    2 => Outcome::Written,
                    _ => Outcome::HeldElsewhere,
                }
            }
            Op::Release { key, value, .. } => {
                let _: i64 = self
                    .release
                    .key(&key)
                    .arg(&value)
                    .arg(CHANNEL)
                    .invoke_async(&mut c)
                    .await?;
                Outcome::Done
            }
            Op::Lookup { key, .. } => {
                let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
                Outcome::Found(v)
            }
        })
    }
}

impl ClusterStore for RedisStore {
    fn run(&self, op: Op) -> StoreFuture<Outcome> {
        let this = self.clone();
        Box::pin(async move {
            match this.run_op(op).await {
                Ok(o) => o,
                Err(e) => {
                    debug!(error = %e, "cluster store operation failed");
                    Outcome::Failed
                }
            }
        })
    }

    fn changes(&self) -> StoreFuture<Option<BoxStream<'static, String>>> {
        let client = self.client.clone();
        Box::pin(async move {
            let connect = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(Duration::from_secs(2), connect).await {
                Ok(Ok(ps)) => Some(
                    ps.into_on_message()
                        .filter_map(|m| async move { m.get_payload::<String>().ok() })
                        .boxed(),
                ),
                Ok(Err(e)) => {
                    debug!(error = %e, "cannot subscribe to the cluster store");
                    None
                }
                Err(_) => None,
            }
        })
    }
}
