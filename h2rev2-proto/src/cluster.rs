//! The cluster registry as a machine: which replicas of a cluster of public servers
//! hold a session for an id, kept in a shared store (Redis, in the tokio adapter) as
//! one set of registrations per id, each with a lease of its own.
//!
//! Each replica runs one [`Registry`]. It is told when its first session of an id comes
//! up and its last one ends, and asks for store operations ([`Op`]) that the adapter
//! carries out and answers ([`Registry::handle_result`]):
//!
//! * **register**: add this replica's registration to the id's set with a lease,
//!   replacing any older one of the same replica (an earlier generation: a restarted
//!   replica), and announce the change. Several replicas hold an id at once when its
//!   Listener keeps sessions to several of them (`--server` repeated, or
//!   `--connections`), and while a Listener moves from a replica going away to another;
//! * **refresh**, every third of the lease: renew this replica's registration, or
//!   write it again (and announce it) when it is gone (its lease ended while the store
//!   was unreachable, say);
//! * **release** when the last session ends: remove exactly this replica's
//!   registration, so a replica never deletes another's, nor a newer one of its own.
//!
//! Values are unique per registration (`{replica} {generation} {address}`, the
//! generation counting this replica's registrations), so the comparisons are exact.
//! The store keeps each registration's expiry by its own clock, so replicas' clocks
//! need not agree. A replica that dies disappears when its leases expire; until then
//! a replica that forwards to it and cannot connect reports it
//! ([`Registry::unreachable`]) and the other holders are tried first. When the store
//! fails, every registration is rewritten once it answers again.
//!
//! Lookups of ids held elsewhere are cached for a short time ([`Config::cache_ttl`])
//! and dropped when the store announces a change of the key ([`Registry::invalidate`]).
//! A route names every holder, in the order to try them: rotated on each request so
//! that forwarded requests spread over the holders, unreachable ones last.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::wire::DialerId;

/// Settings of a replica's registry.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's name, unique in the cluster.
    pub replica: String,
    /// Where other replicas reach this one (`https://host:port`).
    pub address: String,
    /// How long a registration lives without a refresh: a dead replica's ids are
    /// free after at most this. Default 10 s.
    pub lease: Duration,
    /// How long a lookup of another replica's id is trusted without a change
    /// announced. Default 2 s.
    pub cache_ttl: Duration,
    /// How long a lookup that found no replica is trusted. Default 250 ms.
    pub negative_ttl: Duration,
}

impl Config {
    /// A config for `replica` reached at `address`, with the default times.
    pub fn new(replica: impl Into<String>, address: impl Into<String>) -> Self {
        Config {
            replica: replica.into(),
            address: address.into(),
            lease: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(2),
            negative_ttl: Duration::from_millis(250),
        }
    }
}

/// Who holds an id: a registration's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The replica's name.
    pub replica: String,
    /// Its registration's generation.
    pub generation: u64,
    /// Where it is reached.
    pub address: String,
}

impl Owner {
    /// The stored form: `{replica} {generation} {address}`.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.replica, self.generation, self.address)
    }

    /// Parses the stored form; `None` for anything else.
    pub fn decode(s: &str) -> Option<Owner> {
        let mut it = s.splitn(3, ' ');
        let replica = it.next().filter(|r| !r.is_empty())?.to_string();
        let generation = it.next()?.parse().ok()?;
        let address = it.next().filter(|a| !a.is_empty() && !a.contains(' '))?;
        Some(Owner {
            replica,
            generation,
            address: address.to_string(),
        })
    }
}

/// The store key of `id`: the set of its registrations.
pub fn key(id: &DialerId) -> String {
    format!("h2rev2:owners:{}", id.as_str())
}

/// The channel on which changes of keys are announced (the key as the message).
pub const CHANNEL: &str = "h2rev2:changes";

/// A store operation for the adapter to carry out, then answer with
/// [`Registry::handle_result`] (its `op` number). Each is one atomic step (a script).
/// Expiries are the store's: `lease` from the store's clock when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Drop the set's expired registrations and those of `replica` other than
    /// `value`; add (or renew) `value` with `lease`; announce `key` on [`CHANNEL`].
    /// Answer [`Outcome::Done`].
    Register {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// This replica's name (the prefix of its values, before the first space).
        replica: String,
        /// The value.
        value: String,
        /// The lease.
        lease: Duration,
    },
    /// As [`Op::Register`], but announce only when `value` was missing (or expired):
    /// answer [`Outcome::Renewed`] when it was there, [`Outcome::Written`] when not.
    Refresh {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// This replica's name.
        replica: String,
        /// The value.
        value: String,
        /// The lease.
        lease: Duration,
    },
    /// Remove `value` from the set and, if it was there, announce `key`.
    /// Answer [`Outcome::Done`].
    Release {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The set's unexpired values; answer with [`Outcome::Found`].
    Lookup {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
    },
}

impl Op {
    /// The operation's number.
    pub fn number(&self) -> u64 {
        match self {
            Op::Register { op, .. }
            | Op::Refresh { op, .. }
            | Op::Release { op, .. }
            | Op::Lookup { op, .. } => *op,
        }
    }
}

/// What the store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A register or release was done.
    Done,
    /// A refresh renewed this replica's registration.
    Renewed,
    /// A refresh found the registration gone and wrote it again.
    Written,
    /// A lookup's unexpired values (empty: nobody holds the id).
    Found(Vec<String>),
    /// The store could not be reached or failed.
    Failed,
}

/// Where to send a request for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Other replicas hold it: try them in this order (never empty).
    Remote(Vec<Owner>),
    /// Nobody does (as far as the store knows).
    Nowhere,
    /// Not known yet: wait for [`Registry::poll_lookup`] after a lookup was asked for.
    Pending,
    /// The store is failing: no answer can be given.
    Unavailable,
}

#[derive(Debug)]
struct Held {
    generation: u64,
    sessions: usize,
    next_refresh: Instant,
}

#[derive(Debug)]
enum Waiting {
    Store,
    Lookup(DialerId),
}

#[derive(Debug, Clone)]
struct Cached {
    owners: Vec<Owner>,
    until: Instant,
}

/// One replica's registry machine.
#[derive(Debug)]
pub struct Registry {
    config: Config,
    held: HashMap<DialerId, Held>,
    refreshes: BTreeSet<(Instant, DialerId)>,
    cache: HashMap<DialerId, Cached>,
    looking: BTreeSet<DialerId>,
    waiting: BTreeMap<u64, Waiting>,
    ops: Vec<Op>,
    lookups: Vec<(DialerId, Route)>,
    /// Replicas that could not be reached, until when they are tried last.
    unreachable: HashMap<String, Instant>,
    /// Counts routes given, to rotate the holders.
    turn: usize,
    next_op: u64,
    generation: u64,
    healthy: bool,
}

impl Registry {
    /// A registry for `config`; `generation` seeds this replica's registration
    /// numbers (the adapter passes the start time in milliseconds, say, so a restarted
    /// replica never reuses a value).
    pub fn new(config: Config, generation: u64) -> Self {
        Registry {
            config,
            held: HashMap::new(),
            refreshes: BTreeSet::new(),
            cache: HashMap::new(),
            looking: BTreeSet::new(),
            waiting: BTreeMap::new(),
            ops: Vec::new(),
            lookups: Vec::new(),
            unreachable: HashMap::new(),
            turn: 0,
            next_op: 1,
            generation,
            healthy: true,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the store answered the last operation.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether this replica holds a session of `id`.
    pub fn holds(&self, id: &DialerId) -> bool {
        self.held.contains_key(id)
    }

    fn push(&mut self, waiting: Waiting, make: impl FnOnce(u64) -> Op) {
        let op = self.next_op;
        self.next_op += 1;
        self.waiting.insert(op, waiting);
        self.ops.push(make(op));
    }

    fn value(&self, generation: u64) -> String {
        Owner {
            replica: self.config.replica.clone(),
            generation,
            address: self.config.address.clone(),
        }
        .encode()
    }

    /// A session of `id` came up on this replica.
    pub fn session_up(&mut self, now: Instant, id: &DialerId) {
        if let Some(h) = self.held.get_mut(id) {
            h.sessions += 1;
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let next_refresh = now + self.config.lease / 3;
        self.held.insert(
            id.clone(),
            Held {
                generation,
                sessions: 1,
                next_refresh,
            },
        );
        self.refreshes.insert((next_refresh, id.clone()));
        self.cache.remove(id);
        let (key, value, lease) = (key(id), self.value(generation), self.config.lease);
        let replica = self.config.replica.clone();
        self.push(Waiting::Store, |op| Op::Register {
            op,
            key,
            replica,
            value,
            lease,
        });
    }

    /// A session of `id` on this replica ended.
    pub fn session_down(&mut self, id: &DialerId) {
        let Some(h) = self.held.get_mut(id) else {
            return;
        };
        h.sessions -= 1;
        if h.sessions > 0 {
            return;
        }
        self.release(id);
    }

    fn release(&mut self, id: &DialerId) {
        let Some(h) = self.held.remove(id) else {
            return;
        };
        self.refreshes.remove(&(h.next_refresh, id.clone()));
        let (key, value) = (key(id), self.value(h.generation));
        self.push(Waiting::Store, |op| Op::Release { op, key, value });
    }

    /// This replica is going away: every registration is released at once (requests
    /// go to the other holders), whatever sessions it still holds; later
    /// [`Registry::session_up`]s register again.
    pub fn leave(&mut self) {
        let ids: Vec<DialerId> = self.held.keys().cloned().collect();
        for id in ids {
            self.release(&id);
        }
    }

    /// Whether operations asked for are still unanswered.
    pub fn busy(&self) -> bool {
        !self.ops.is_empty() || self.waiting.values().any(|w| matches!(w, Waiting::Store))
    }

    /// Where a request for `id` goes, when this replica holds no session of it. A
    /// [`Route::Pending`] answer asks the store; the answer comes out of
    /// [`Registry::poll_lookup`].
    pub fn route(&mut self, now: Instant, id: &DialerId) -> Route {
        if let Some(c) = self.cache.get(id) {
            if c.until > now {
                let owners = c.owners.clone();
                return self.order(now, owners);
            }
        }
        if !self.looking.contains(id) {
            self.looking.insert(id.clone());
            let key = key(id);
            self.push(Waiting::Lookup(id.clone()), |op| Op::Lookup { op, key });
        }
        Route::Pending
    }

    /// The holders in the order to try them: rotated, unreachable ones last.
    fn order(&mut self, now: Instant, mut owners: Vec<Owner>) -> Route {
        if owners.is_empty() {
            return Route::Nowhere;
        }
        self.unreachable.retain(|_, until| *until > now);
        let n = owners.len();
        owners.rotate_left(self.turn % n);
        self.turn = self.turn.wrapping_add(1);
        // A stable sort keeps the rotation among the reachable ones.
        owners.sort_by_key(|o| self.unreachable.contains_key(&o.replica));
        Route::Remote(owners)
    }

    /// A forward to `owner` could not connect (or found no session there): it is
    /// tried last for [`Config::cache_ttl`], and `id` is looked up again.
    pub fn unreachable(&mut self, now: Instant, id: &DialerId, owner: &Owner) {
        self.unreachable
            .insert(owner.replica.clone(), now + self.config.cache_ttl);
        self.cache.remove(id);
    }

    /// The store announced a change of `key`: lookups of it are asked again.
    pub fn invalidate(&mut self, key_changed: &str) {
        self.cache.retain(|id, _| key(id) != key_changed);
    }

    /// Forgets every cached lookup (announcements may have been missed, e.g. while
    /// the subscription was down).
    pub fn forget_lookups(&mut self) {
        self.cache.clear();
    }

    /// Answers operation `op`.
    pub fn handle_result(&mut self, now: Instant, op: u64, outcome: Outcome) {
        let Some(waiting) = self.waiting.remove(&op) else {
            return;
        };
        if outcome == Outcome::Failed {
            self.healthy = false;
            if let Waiting::Lookup(id) = waiting {
                self.looking.remove(&id);
                self.lookups.push((id, Route::Unavailable));
            }
            return;
        }
        let recovered = !self.healthy;
        self.healthy = true;
        if let Waiting::Lookup(id) = waiting {
            self.looking.remove(&id);
            let mut owners: Vec<Owner> = match outcome {
                Outcome::Found(values) => values.iter().filter_map(|v| Owner::decode(v)).collect(),
                _ => Vec::new(),
            };
            // Our own registration (a session that just ended, say) is no route.
            owners.retain(|o| o.replica != self.config.replica);
            owners.sort_by(|a, b| a.replica.cmp(&b.replica));
            owners.dedup_by(|a, b| a.replica == b.replica);
            let ttl = if owners.is_empty() {
                self.config.negative_ttl
            } else {
                self.config.cache_ttl
            };
            self.cache.insert(
                id.clone(),
                Cached {
                    owners: owners.clone(),
                    until: now + ttl,
                },
            );
            let route = self.order(now, owners);
            self.lookups.push((id, route));
        }
        if recovered {
            // The store is back: write every registration again at once.
            let ids: Vec<DialerId> = self.held.keys().cloned().collect();
            for id in ids {
                self.refresh_now(now, &id);
            }
        }
    }

    fn refresh_now(&mut self, now: Instant, id: &DialerId) {
        let Some(h) = self.held.get_mut(id) else {
            return;
        };
        self.refreshes.remove(&(h.next_refresh, id.clone()));
        h.next_refresh = now + self.config.lease / 3;
        self.refreshes.insert((h.next_refresh, id.clone()));
        let generation = h.generation;
        let (key, value, lease) = (key(id), self.value(generation), self.config.lease);
        let replica = self.config.replica.clone();
        self.push(Waiting::Store, |op| Op::Refresh {
            op,
            key,
            replica,
            value,
            lease,
        });
    }

    /// Fires the refreshes due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, id)) = self.refreshes.first().cloned() {
            if at > now {
                break;
            }
            self.refresh_now(now, &id);
        }
    }

    /// When [`Registry::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.refreshes.first().map(|(t, _)| *t)
    }

    /// The next store operation to carry out.
    pub fn poll_op(&mut self) -> Option<Op> {
        if self.ops.is_empty() {
            None
        } else {
            Some(self.ops.remove(0))
        }
    }

    /// The next answered lookup.
    pub fn poll_lookup(&mut self) -> Option<(DialerId, Route)> {
        if self.lookups.is_empty() {
            None
        } else {
            Some(self.lookups.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn id(s: &str) -> DialerId {
        DialerId::new(s).unwrap()
    }

    /// A store as Redis holds it (a set of values with an expiry each per key),
    /// carrying out the ops' semantics exactly.
    #[derive(Default)]
    struct Store {
        keys: HashMap<String, Vec<(String, Instant)>>,
        up: bool,
        announced: Vec<String>,
    }

    impl Store {
        fn get(&self, now: Instant, k: &str) -> Vec<String> {
            self.keys
                .get(k)
                .map(|vs| {
                    vs.iter()
                        .filter(|(_, until)| *until > now)
                        .map(|(v, _)| v.clone())
                        .collect()
                })
                .unwrap_or_default()
        }

        fn put(
            &mut self,
            now: Instant,
            key: &str,
            replica: &str,
            value: &str,
            lease: Duration,
        ) -> bool {
            let prefix = format!("{replica} ");
            let set = self.keys.entry(key.to_string()).or_default();
            set.retain(|(v, until)| *until > now && (v == value || !v.starts_with(&prefix)));
            let had = set.iter().any(|(v, _)| v == value);
            set.retain(|(v, _)| v != value);
            set.push((value.to_string(), now + lease));
            had
        }

        fn run(&mut self, now: Instant, op: &Op) -> Outcome {
            if !self.up {
                return Outcome::Failed;
            }
            match op {
                Op::Register {
                    key,
                    replica,
                    value,
                    lease,
                    ..
                } => {
                    self.put(now, key, replica, value, *lease);
                    self.announced.push(key.clone());
                    Outcome::Done
                }
                Op::Refresh {
                    key,
                    replica,
                    value,
                    lease,
                    ..
                } => {
                    if self.put(now, key, replica, value, *lease) {
                        Outcome::Renewed
                    } else {
                        self.announced.push(key.clone());
                        Outcome::Written
                    }
                }
                Op::Release { key, value, .. } => {
                    if let Some(set) = self.keys.get_mut(key) {
                        let before = set.len();
                        set.retain(|(v, _)| v != value);
                        if set.len() != before {
                            self.announced.push(key.clone());
                        }
                    }
                    Outcome::Done
                }
                Op::Lookup { key, .. } => Outcome::Found(self.get(now, key)),
            }
        }
    }

    fn drive(r: &mut Registry, store: &mut Store, now: Instant) {
        while let Some(op) = r.poll_op() {
            let out = store.run(now, &op);
            r.handle_result(now, op.number(), out);
        }
    }

    /// The replicas holding `i` in the store, sorted.
    fn owners_of(store: &Store, now: Instant, i: &str) -> Vec<String> {
        let mut v: Vec<String> = store
            .get(now, &key(&id(i)))
            .iter()
            .filter_map(|v| Owner::decode(v))
            .map(|o| o.replica)
            .collect();
        v.sort();
        v
    }

    fn replicas(route: &Route) -> Vec<&str> {
        match route {
            Route::Remote(os) => os.iter().map(|o| o.replica.as_str()).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn up() -> Store {
        Store {
            up: true,
            ..Default::default()
        }
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let o = Owner {
            replica: "r1".into(),
            generation: 7,
            address: "https://10.0.0.1:9090".into(),
        };
        assert_eq!(Owner::decode(&o.encode()), Some(o));
        for bad in ["", "r1", "r1 x https://a", "r1 7 ", " 7 a", "r1 7 a b"] {
            assert_eq!(Owner::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_replica_holding_an_id_is_a_route_and_a_release_removes_only_its_own() {
        let now = Instant::now();
        let mut store = up();
        let mut r1 = Registry::new(Config::new("r1", "https://r1"), 0);
        let mut r2 = Registry::new(Config::new("r2", "https://r2"), 0);
        let mut r3 = Registry::new(Config::new("r3", "https://r3"), 0);
        r1.session_up(now, &id("web"));
        drive(&mut r1, &mut store, now);
        // The Listener holds a second session, on r2.
        r2.session_up(now, &id("web"));
        drive(&mut r2, &mut store, now);
        assert_eq!(owners_of(&store, now, "web"), ["r1", "r2"]);
        // r3 routes to both, alternating which comes first.
        assert_eq!(r3.route(now, &id("web")), Route::Pending);
        drive(&mut r3, &mut store, now);
        let (i, first) = r3.poll_lookup().unwrap();
        assert_eq!(i, id("web"));
        let mut firsts = vec![replicas(&first)[0].to_string()];
        assert_eq!(replicas(&first).len(), 2);
        for _ in 0..3 {
            firsts.push(replicas(&r3.route(now, &id("web")))[0].to_string());
        }
        // Cached: no second lookup within the cache time.
        assert_eq!(r3.poll_op(), None);
        assert!(
            firsts.contains(&"r1".into()) && firsts.contains(&"r2".into()),
            "{firsts:?}"
        );
        // r1's session ends: its release leaves r2's registration alone.
        r1.session_down(&id("web"));
        drive(&mut r1, &mut store, now);
        assert_eq!(owners_of(&store, now, "web"), ["r2"]);
        assert_eq!(
            store.announced.last().map(String::as_str),
            Some("h2rev2:owners:web")
        );
        // r1 routes to r2, never to itself.
        assert_eq!(r1.route(now, &id("web")), Route::Pending);
        drive(&mut r1, &mut store, now);
        assert_eq!(replicas(&r1.poll_lookup().unwrap().1), ["r2"]);
    }

    #[test]
    fn an_unreachable_holder_is_tried_last_until_the_cache_time_ends() {
        let now = Instant::now();
        let mut store = up();
        let mut r1 = Registry::new(Config::new("r1", "https://r1"), 0);
        let mut r2 = Registry::new(Config::new("r2", "https://r2"), 0);
        let mut r3 = Registry::new(Config::new("r3", "https://r3"), 0);
        for r in [&mut r1, &mut r2] {
            r.session_up(now, &id("web"));
            drive(r, &mut store, now);
        }
        r3.route(now, &id("web"));
        drive(&mut r3, &mut store, now);
        let (_, route) = r3.poll_lookup().unwrap();
        let Route::Remote(owners) = route else {
            panic!()
        };
        let dead = owners.iter().find(|o| o.replica == "r1").unwrap().clone();
        r3.unreachable(now, &id("web"), &dead);
        // Asked again (the cache was dropped), and r1 comes last every time.
        assert_eq!(r3.route(now, &id("web")), Route::Pending);
        drive(&mut r3, &mut store, now);
        assert_eq!(replicas(&r3.poll_lookup().unwrap().1), ["r2", "r1"]);
        for _ in 0..3 {
            assert_eq!(replicas(&r3.route(now, &id("web"))), ["r2", "r1"]);
        }
        // Later it takes its turn again.
        let t = now + Duration::from_secs(3);
        r3.route(t, &id("web"));
        drive(&mut r3, &mut store, t);
        r3.poll_lookup();
        let firsts: Vec<String> = (0..2)
            .map(|_| replicas(&r3.route(t, &id("web")))[0].to_string())
            .collect();
        assert!(firsts.contains(&"r1".into()), "{firsts:?}");
    }

    #[test]
    fn a_dead_replica_leaves_the_set_when_its_lease_ends_and_the_others_stay() {
        let t0 = Instant::now();
        let mut store = up();
        let mut r1 = Registry::new(Config::new("r1", "https://r1"), 0);
        let mut r2 = Registry::new(Config::new("r2", "https://r2"), 0);
        r1.session_up(t0, &id("web"));
        drive(&mut r1, &mut store, t0);
        r2.session_up(t0, &id("web"));
        drive(&mut r2, &mut store, t0);
        // r2 dies (no more refreshes); r1 keeps refreshing.
        let mut t = t0;
        for s in 1..=11 {
            t = t0 + Duration::from_secs(s);
            r1.handle_timeout(t);
            drive(&mut r1, &mut store, t);
            let want: &[&str] = if s < 10 { &["r1", "r2"] } else { &["r1"] };
            assert_eq!(owners_of(&store, t, "web"), want, "after {s} s");
        }
        assert_eq!(owners_of(&store, t, "web"), ["r1"]);
    }

    #[test]
    fn a_restarted_replica_replaces_its_old_registration_and_the_old_one_cannot_delete_it() {
        let now = Instant::now();
        let mut store = up();
        let mut old = Registry::new(Config::new("r1", "https://r1"), 100);
        old.session_up(now, &id("web"));
        drive(&mut old, &mut store, now);
        // r1 restarts (a later seed) and the Listener comes back to it.
        let mut new = Registry::new(Config::new("r1", "https://r1"), 5000);
        new.session_up(now, &id("web"));
        drive(&mut new, &mut store, now);
        let values = store.get(now, &key(&id("web")));
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(Owner::decode(&values[0]).unwrap().generation, 5001);
        // The old process's late release (or refresh) leaves the new one alone.
        old.session_down(&id("web"));
        drive(&mut old, &mut store, now);
        assert_eq!(store.get(now, &key(&id("web"))), values);
    }

    #[test]
    fn leaving_releases_every_registration_at_once() {
        let now = Instant::now();
        let mut store = up();
        let mut r = Registry::new(Config::new("r1", "https://r1"), 0);
        for i in ["a", "b"] {
            r.session_up(now, &id(i));
        }
        drive(&mut r, &mut store, now);
        assert_eq!(owners_of(&store, now, "a"), ["r1"]);
        r.leave();
        assert!(r.busy());
        drive(&mut r, &mut store, now);
        assert!(!r.busy());
        assert!(owners_of(&store, now, "a").is_empty());
        assert!(owners_of(&store, now, "b").is_empty());
        // The sessions' later ends ask nothing more.
        r.session_down(&id("a"));
        assert_eq!(r.poll_op(), None);
    }

    #[test]
    fn registrations_are_rewritten_when_the_store_comes_back() {
        let t0 = Instant::now();
        let mut store = Store::default();
        let mut r = Registry::new(Config::new("r1", "https://r1"), 100);
        r.session_up(t0, &id("a"));
        drive(&mut r, &mut store, t0);
        assert!(!r.healthy());
        assert_eq!(r.route(t0, &id("b")), Route::Pending);
        drive(&mut r, &mut store, t0);
        assert_eq!(r.poll_lookup(), Some((id("b"), Route::Unavailable)));
        store.up = true;
        let t = t0 + Duration::from_secs(4);
        r.handle_timeout(t);
        drive(&mut r, &mut store, t);
        assert!(r.healthy());
        assert_eq!(owners_of(&store, t, "a"), ["r1"]);
    }

    proptest! {
        /// Any interleaving of sessions up and down on 3 replicas, refreshes and
        /// expiries: the store names only replicas that hold a session of the id, and
        /// once every replica refreshed, exactly those that do.
        #[test]
        fn the_store_names_exactly_the_replicas_that_hold_the_id(
            steps in proptest::collection::vec((0usize..3, 0usize..3, any::<bool>()), 1..60)
        ) {
            let t0 = Instant::now();
            let mut store = up();
            let mut rs: Vec<Registry> = (0..3)
                .map(|i| Registry::new(Config::new(format!("r{i}"), format!("https://r{i}")), 0))
                .collect();
            let ids = ["a", "b", "c"];
            let mut counts = [[0usize; 3]; 3];
            let mut t = t0;
            for (r, i, up) in steps {
                t += Duration::from_millis(300);
                if up {
                    rs[r].session_up(t, &id(ids[i]));
                    counts[r][i] += 1;
                } else if counts[r][i] > 0 {
                    rs[r].session_down(&id(ids[i]));
                    counts[r][i] -= 1;
                }
                for reg in rs.iter_mut() {
                    reg.handle_timeout(t);
                    drive(reg, &mut store, t);
                }
                for (i, name) in ids.iter().enumerate() {
                    for owner in owners_of(&store, t, name) {
                        let r: usize = owner[1..].parse().unwrap();
                        prop_assert!(counts[r][i] > 0, "{name} names r{r}, which holds none");
                    }
                }
            }
            t += Duration::from_secs(4);
            for reg in rs.iter_mut() {
                reg.handle_timeout(t);
                drive(reg, &mut store, t);
            }
            for (i, name) in ids.iter().enumerate() {
                let want: Vec<String> = (0..3).filter(|r| counts[*r][i] > 0).map(|r| format!("r{r}")).collect();
                prop_assert_eq!(owners_of(&store, t, name), want, "{}", name);
            }
        }
    }
}
