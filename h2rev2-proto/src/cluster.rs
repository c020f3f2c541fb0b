//! The cluster registry as a machine: which replica of a cluster of public servers
//! holds a session for an id, kept in a shared store (Redis, in the tokio adapter) as
//! one key per id with a lease.
//!
//! Each replica runs one [`Registry`]. It is told when its first session of an id comes
//! up and its last one ends, and asks for store operations ([`Op`]) that the adapter
//! carries out and answers ([`Registry::handle_result`]):
//!
//! * **register**: `SET key value PX ttl`, unconditionally: the newest replica to get
//!   a session of the id owns it (a reconnecting Listener lands where it lands);
//! * **refresh**, every third of the lease: a compare-and-expire that renews the key
//!   only while it still holds this replica's value, or writes it again when the key is
//!   gone (the owner's lease ended or it released the id while this replica still holds
//!   a session); another replica's value is left alone, and tried again at the next
//!   refresh;
//! * **release** when the last session ends: a compare-and-delete on this replica's
//!   value, so a replica never deletes a newer registration of another one.
//!
//! Values are unique per registration (`{replica} {generation} {address}`, the
//! generation counting this replica's registrations), so the comparisons are exact. A
//! replica that dies disappears when its leases expire. When the store fails, every
//! registration is rewritten once it answers again.
//!
//! Lookups of ids held elsewhere are cached for a short time ([`Config::cache_ttl`])
//! and dropped when the store announces a change of the key ([`Registry::invalidate`]).

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

/// The store key of `id`.
pub fn key(id: &DialerId) -> String {
    format!("h2rev2:id:{}", id.as_str())
}

/// The channel on which changes of keys are announced (the key as the message).
pub const CHANNEL: &str = "h2rev2:changes";

/// A store operation for the adapter to carry out, then answer with
/// [`Registry::handle_result`] (its `op` number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `SET key value PX lease`, then announce `key` on [`CHANNEL`].
    Register {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease.
        lease: Duration,
    },
    /// If `key` holds `value`: renew its lease ([`Outcome::Renewed`]); if it is
    /// missing: set it with the lease and announce it ([`Outcome::Written`]); else
    /// nothing ([`Outcome::HeldElsewhere`]). Atomically (a script).
    Refresh {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease.
        lease: Duration,
    },
    /// If `key` holds `value`, delete it and announce it. Atomically.
    Release {
        /// The operation's number.
        op: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `GET key`; answer with [`Outcome::Found`].
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
    /// A refresh renewed this replica's key.
    Renewed,
    /// A refresh found the key gone and wrote it again.
    Written,
    /// A refresh found another replica's registration.
    HeldElsewhere,
    /// A lookup's value (`None`: no key).
    Found(Option<String>),
    /// The store could not be reached or failed.
    Failed,
}

/// Where to send a request for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Another replica holds it.
    Remote(Owner),
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
    /// Whether the store is known to hold the registration.
    stored: bool,
}

#[derive(Debug)]
enum Waiting {
    Register(DialerId),
    Refresh(DialerId),
    Release,
    Lookup(DialerId),
}

#[derive(Debug, Clone)]
struct Cached {
    owner: Option<Owner>,
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
                stored: false,
            },
        );
        self.refreshes.insert((next_refresh, id.clone()));
        self.cache.remove(id);
        let (key, value, lease) = (key(id), self.value(generation), self.config.lease);
        self.push(Waiting::Register(id.clone()), |op| Op::Register {
            op,
            key,
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
        let h = self.held.remove(id).expect("held");
        self.refreshes.remove(&(h.next_refresh, id.clone()));
        let (key, value) = (key(id), self.value(h.generation));
        self.push(Waiting::Release, |op| Op::Release { op, key, value });
    }

    /// Where a request for `id` goes, when this replica holds no session of it. A
    /// [`Route::Pending`] answer asks the store; the answer comes out of
    /// [`Registry::poll_lookup`].
    pub fn route(&mut self, now: Instant, id: &DialerId) -> Route {
        if let Some(c) = self.cache.get(id) {
            if c.until > now {
                return match &c.owner {
                    Some(o) => Route::Remote(o.clone()),
                    None => Route::Nowhere,
                };
            }
        }
        if !self.looking.contains(id) {
            self.looking.insert(id.clone());
            let key = key(id);
            self.push(Waiting::Lookup(id.clone()), |op| Op::Lookup { op, key });
        }
        Route::Pending
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
            if self.healthy {
                self.healthy = false;
                for h in self.held.values_mut() {
                    h.stored = false;
                }
            }
            if let Waiting::Lookup(id) = waiting {
                self.looking.remove(&id);
                self.lookups.push((id, Route::Unavailable));
            }
            return;
        }
        let recovered = !self.healthy;
        self.healthy = true;
        match waiting {
            Waiting::Register(id) | Waiting::Refresh(id) => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.stored = outcome != Outcome::HeldElsewhere;
                }
            }
            Waiting::Release => {}
            Waiting::Lookup(id) => {
                self.looking.remove(&id);
                let owner = match outcome {
                    Outcome::Found(Some(v)) => Owner::decode(&v),
                    _ => None,
                };
                // Our own registration (a session that just ended, say) is no route.
                let owner = owner.filter(|o| o.replica != self.config.replica);
                let ttl = if owner.is_some() {
                    self.config.cache_ttl
                } else {
                    self.config.negative_ttl
                };
                self.cache.insert(
                    id.clone(),
                    Cached {
                        owner: owner.clone(),
                        until: now + ttl,
                    },
                );
                let route = match owner {
                    Some(o) => Route::Remote(o),
                    None => Route::Nowhere,
                };
                self.lookups.push((id, route));
            }
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
        self.push(Waiting::Refresh(id.clone()), |op| Op::Refresh {
            op,
            key,
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

    /// A store as Redis would hold it, carrying out the ops' semantics exactly.
    #[derive(Default)]
    struct Store {
        keys: HashMap<String, (String, Instant)>,
        up: bool,
    }

    impl Store {
        fn get(&self, now: Instant, k: &str) -> Option<String> {
            self.keys
                .get(k)
                .filter(|(_, until)| *until > now)
                .map(|(v, _)| v.clone())
        }

        fn run(&mut self, now: Instant, op: &Op) -> Outcome {
            if !self.up {
                return Outcome::Failed;
            }
            match op {
                Op::Register {
                    key, value, lease, ..
                } => {
                    self.keys.insert(key.clone(), (value.clone(), now + *lease));
                    Outcome::Done
                }
                Op::Refresh {
                    key, value, lease, ..
                } => match self.get(now, key) {
                    Some(v) if v == *value => {
                        self.keys.insert(key.clone(), (v, now + *lease));
                        Outcome::Renewed
                    }
                    None => {
                        self.keys.insert(key.clone(), (value.clone(), now + *lease));
                        Outcome::Written
                    }
                    Some(_) => Outcome::HeldElsewhere,
                },
                Op::Release { key, value, .. } => {
                    if self.get(now, key).as_deref() == Some(value.as_str()) {
                        self.keys.remove(key);
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

    fn owner_of(store: &Store, now: Instant, i: &str) -> Option<String> {
        store
            .get(now, &key(&id(i)))
            .and_then(|v| Owner::decode(&v))
            .map(|o| o.replica)
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
    fn a_stale_replica_never_deletes_a_newer_registration() {
        let now = Instant::now();
        let mut store = Store {
            up: true,
            ..Default::default()
        };
        let mut r1 = Registry::new(Config::new("r1", "https://r1"), 0);
        let mut r2 = Registry::new(Config::new("r2", "https://r2"), 0);
        r1.session_up(now, &id("web"));
        drive(&mut r1, &mut store, now);
        // The Listener reconnects to r2 before r1 noticed its session died.
        r2.session_up(now, &id("web"));
        drive(&mut r2, &mut store, now);
        assert_eq!(owner_of(&store, now, "web").as_deref(), Some("r2"));
        r1.session_down(&id("web"));
        drive(&mut r1, &mut store, now);
        assert_eq!(owner_of(&store, now, "web").as_deref(), Some("r2"));
        // r1 routes to r2.
        assert_eq!(r1.route(now, &id("web")), Route::Pending);
        drive(&mut r1, &mut store, now);
        match r1.poll_lookup() {
            Some((i, Route::Remote(o))) => {
                assert_eq!(i, id("web"));
                assert_eq!(o.replica, "r2");
                assert_eq!(o.address, "https://r2");
            }
            other => panic!("{other:?}"),
        }
        // Cached: no second lookup within the cache time.
        assert!(matches!(r1.route(now, &id("web")), Route::Remote(_)));
        assert_eq!(r1.poll_op(), None);
    }

    #[test]
    fn a_dead_replica_frees_its_ids_when_the_lease_ends_and_a_survivor_reclaims() {
        let t0 = Instant::now();
        let mut store = Store {
            up: true,
            ..Default::default()
        };
        let mut r1 = Registry::new(Config::new("r1", "https://r1"), 0);
        let mut r2 = Registry::new(Config::new("r2", "https://r2"), 0);
        // Both hold sessions of `web`; r2 registered last.
        r1.session_up(t0, &id("web"));
        drive(&mut r1, &mut store, t0);
        r2.session_up(t0, &id("web"));
        drive(&mut r2, &mut store, t0);
        // r1's refreshes find r2's value and leave it alone.
        let t = t0 + Duration::from_secs(4);
        r1.handle_timeout(t);
        drive(&mut r1, &mut store, t);
        assert_eq!(owner_of(&store, t, "web").as_deref(), Some("r2"));
        // r2 dies (no more refreshes): its lease ends within 10 s, then r1 reclaims.
        let mut t = t;
        for _ in 0..10 {
            t += Duration::from_secs(1);
            r1.handle_timeout(t);
            drive(&mut r1, &mut store, t);
        }
        assert_eq!(owner_of(&store, t, "web").as_deref(), Some("r1"));
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
        assert_eq!(owner_of(&store, t, "a").as_deref(), Some("r1"));
    }

    proptest! {
        /// Any interleaving of sessions up and down on 3 replicas, refreshes and
        /// expiries: whenever the store names an owner, that replica holds a session
        /// (no stale registration survives a refresh round); and once every replica
        /// refreshed, an id some replica holds has an owner.
        #[test]
        fn the_store_names_only_replicas_that_hold_the_id(
            steps in proptest::collection::vec((0usize..3, 0usize..3, any::<bool>()), 1..60)
        ) {
            let t0 = Instant::now();
            let mut store = Store { up: true, ..Default::default() };
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
                    if let Some(owner) = owner_of(&store, t, name) {
                        let r: usize = owner[1..].parse().unwrap();
                        prop_assert!(counts[r][i] > 0, "{name} names r{r}, which holds none");
                    }
                }
            }
            // A full refresh round later every held id has an owner.
            t += Duration::from_secs(4);
            for reg in rs.iter_mut() {
                reg.handle_timeout(t);
                drive(reg, &mut store, t);
            }
            for (i, name) in ids.iter().enumerate() {
                let held = (0..3).any(|r| counts[r][i] > 0);
                prop_assert_eq!(owner_of(&store, t, name).is_some(), held, "{}", name);
            }
        }
    }
}
