//! The cluster registry's store on Redis (the `redis` crate, tokio): one sorted set
//! per id, its members the registrations and their scores their expiries (by Redis's
//! clock); register, refresh, release and lookup as Lua scripts (one atomic step
//! each), announcements on a pub/sub channel.
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

/// The store's clock in milliseconds (every expiry is by it: replicas' clocks need
/// not agree), and a key of another type (an older version's) cleared. Shared head of
/// the scripts.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
"#;

/// Register or refresh: ARGV = value, lease (ms), channel, replica prefix
/// (`name `), announce always (`1`) or only when the value was missing (`0`).
/// Drops expired values and the replica's other values, adds or renews ours, sets the
/// key's expiry to its last value's; 1 if our value was there, 2 if written.
const PUT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local prefix = ARGV[4]
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= ARGV[1] and string.sub(m, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], m)
  end
end
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
if ARGV[5] == '1' or not had then
  redis.call('PUBLISH', ARGV[3], KEYS[1])
end
if had then return 1 end
return 2
"#;

/// Removes our value (ARGV[1]); announces on ARGV[2] if it was there.
const RELEASE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
"#;

/// The unexpired values.
const LOOKUP: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"#;

/// A [`ClusterStore`] on a Redis server. Nothing is connected until the first
/// operation; a lost connection is made again by the next one, so a server starts
/// (and its local sessions serve) while Redis is down.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: std::sync::Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    put: redis::Script,
    release: redis::Script,
    lookup: redis::Script,
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
            put: redis::Script::new(&format!("{NOW}{PUT}")),
            release: redis::Script::new(RELEASE),
            lookup: redis::Script::new(&format!("{NOW}{LOOKUP}")),
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
        let register = matches!(op, Op::Register { .. });
        Ok(match op {
            Op::Register {
                key,
                replica,
                value,
                lease,
                ..
            }
            | Op::Refresh {
                key,
                replica,
                value,
                lease,
                ..
            } => {
                let n: i64 = self
                    .put
                    .key(&key)
                    .arg(&value)
                    .arg(lease.as_millis() as u64)
                    .arg(CHANNEL)
                    .arg(format!("{replica} "))
                    .arg(if register { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await?;
                match (register, n) {
                    (true, _) => Outcome::Done,
                    (false, 1) => Outcome::Renewed,
                    (false, _) => Outcome::Written,
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
                let v: Vec<String> = self.lookup.key(&key).invoke_async(&mut c).await?;
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
