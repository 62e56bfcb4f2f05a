//! Multi-node mode: Redis as the directory of nodes and rooms (on when `redis_url` is set).
//!
//! Every node keeps an entry `{prefix}:node:{id}` (its signaling URL, media addresses and load)
//! that expires [`NODE_TTL`] after its last refresh; it refreshes it every [`HEARTBEAT`]. A room
//! lives on one node: `{prefix}:room:{name}` holds that node's id, set with `SET NX` (so two
//! joins racing to create a room on two nodes end in one room) and kept alive by the node while
//! it hosts the room. A claim whose node's entry is gone (the node died) is taken over by the next
//! join. A Redis that restarts empty is filled again within a heartbeat: every node re-registers
//! and re-asserts the claims of the rooms it hosts.
//!
//! A join that reaches a node other than its room's is proxied there (see
//! `docs/architecture.md`, "Several nodes"): [`Cluster::route`] says where a room is, placing it
//! first if it is nowhere.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::{Placement, Settings};
use crate::drain::Drain;
use crate::rooms::Rooms;

/// How often a node refreshes its entry and its rooms' claims.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's entry outlives its last refresh: a node that died is gone from the
/// directory (and its rooms free to move) at most this long after.
pub const NODE_TTL: Duration = Duration::from_secs(4);
/// How long a room's claim outlives its node's last refresh of it.
const CLAIM_TTL: Duration = Duration::from_secs(15);
/// A claim this node made is kept this long for a room it does not host yet (the join that
/// made it is on its way).
const CLAIM_GRACE: Duration = Duration::from_secs(10);
/// Each Redis command gives up after this long (the directory counts as unreachable).
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// The HTTP header that marks a join or request proxied from another node (its value: that
/// node's id). A node serves such a request itself, never proxies it again.
pub const FORWARDED_HEADER: &str = "x-fanout-forwarded";

/// A node as the directory shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where the other nodes reach its signaling (`http://HOST:PORT`).
    pub url: String,
    /// Its media ports, as announced to clients.
    pub media: Vec<String>,
    pub rooms: usize,
    pub participants: usize,
    pub tracks: usize,
    /// Percent of the machine's CPU the process used over the last heartbeat.
    pub cpu: f64,
    /// Draining: takes no new rooms.
    pub draining: bool,
    /// Unix seconds.
    pub started_at: u64,
    pub version: String,
}

impl NodeInfo {
    /// What "least loaded" compares: media work first, CPU to break ties.
    fn load_key(&self) -> (usize, u64) {
        (self.participants + self.tracks, (self.cpu * 10.0) as u64)
    }
}

/// Where a join or a request for a room is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Here.
    Local,
    /// On another node.
    Remote(NodeInfo),
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the cluster directory (Redis) is unreachable: {0}")]
    Directory(String),
    #[error("no node is ready to take a new room")]
    NoNode,
    #[error("room {0:?} moved to another node while this join was on its way; join again")]
    Moved(String),
}

impl From<redis::RedisError> for RouteError {
    fn from(e: redis::RedisError) -> RouteError {
        RouteError::Directory(e.to_string())
    }
}

/// What a node needs to take part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: String,
    pub prefix: String,
    pub node_id: String,
    pub node_url: String,
    pub media: Vec<String>,
    pub placement: Placement,
}

impl ClusterConfig {
    /// From the settings (`None` without `redis_url`), with the media addresses the engine got.
    pub fn from_settings(settings: &Settings, media: &[SocketAddr]) -> Option<ClusterConfig> {
        let redis_url = settings.redis_url.clone()?;
        let node_id = settings
            .node_id
            .clone()
            .unwrap_or_else(|| format!("ND_{}", Alphanumeric.sample_string(&mut rand::rng(), 10)));
        let node_url = settings
            .node_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| default_node_url(settings.bind));
        let announce = settings.announce_ips();
        let media = media
            .iter()
            .flat_map(|m| {
                let ips = if announce.is_empty() {
                    vec![m.ip()]
                } else {
                    announce.clone()
                };
                ips.into_iter()
                    .map(move |ip| SocketAddr::new(ip, m.port()).to_string())
            })
            .collect();
        Some(ClusterConfig {
            redis_url,
            prefix: settings.redis_prefix.clone(),
            node_id,
            node_url,
            media,
            placement: settings.room_placement,
        })
    }
}

/// `http://IP:PORT` of `bind`; a wildcard bind gives this host's first non-loopback address.
fn default_node_url(bind: SocketAddr) -> String {
    let ip = if bind.ip().is_unspecified() {
        if_addrs::get_if_addrs()
            .ok()
            .and_then(|list| {
                list.into_iter()
                    .map(|i| i.ip())
                    .find(|ip| !ip.is_loopback() && ip.is_ipv4() == bind.is_ipv4())
            })
            .unwrap_or(if bind.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            })
    } else {
        bind.ip()
    };
    format!("http://{}", SocketAddr::new(ip, bind.port()))
}

/// This node's membership in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    redis: ConnectionManager,
    rooms: Rooms,
    drain: Drain,
    metrics: Arc<crate::metrics::Metrics>,
    started_at: u64,
    /// Claims this node made for rooms it hosts or is about to, and when.
    held: Mutex<HashMap<String, Instant>>,
    /// Set once the node left the directory (end of a drain): no more heartbeats.
    left: std::sync::atomic::AtomicBool,
    scripts: Scripts,
    /// Requests proxied to other nodes (admin API, WHIP/WHEP), pooled.
    http: reqwest::Client,
}

struct Scripts {
    /// Sets KEYS[1] to ARGV[1] for ARGV[2] ms if it is unset or already ARGV[1]; 1 if so.
    refresh: Script,
    /// Deletes KEYS[1] if it is ARGV[1]; 1 if so.
    release: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            refresh: Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if v == false or v == ARGV[1] then \
                   redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 \
                 end return 0",
            ),
            release: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('DEL', KEYS[1]) \
                 end return 0",
            ),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Cluster {
    /// Joins the cluster: connects to Redis (lazily: a Redis that is not up yet is retried at
    /// every heartbeat) and starts the heartbeat.
    pub fn start(
        config: ClusterConfig,
        rooms: Rooms,
        drain: Drain,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Cluster, String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("invalid configuration: `redis_url`: {e}"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("redis_url: {e}"))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                redis,
                rooms,
                drain,
                metrics,
                started_at: unix_now(),
                held: Mutex::new(HashMap::new()),
                left: Default::default(),
                scripts: Scripts::new(),
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?,
            }),
        };
        info!(
            node = %cluster.inner.config.node_id,
            url = %cluster.inner.config.node_url,
            placement = ?cluster.inner.config.placement,
            "multi-node mode: registering in the Redis directory"
        );
        let beat = cluster.clone();
        tokio::spawn(async move { beat.heartbeat().await });
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// The client for requests to other nodes.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.inner.config.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.inner.config.prefix)
    }

    fn redis(&self) -> ConnectionManager {
        self.inner.redis.clone()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refreshes this node's entry and its rooms' claims every [`HEARTBEAT`], until it leaves.
    async fn heartbeat(self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuMeter::new();
        let mut reachable = true;
        loop {
            tick.tick().await;
            if self.inner.left.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let load = cpu.percent();
            let result = self.beat(load).await;
            self.inner
                .metrics
                .cluster_directory_up
                .set(i64::from(result.is_ok()));
            match result {
                Ok(()) if !reachable => {
                    info!("the Redis directory is reachable again; registered");
                    reachable = true;
                }
                Ok(()) => {}
                Err(e) if reachable => {
                    warn!(%e, "cannot reach the Redis directory; calls go on, new rooms wait");
                    reachable = false;
                }
                Err(e) => debug!(%e, "Redis directory still unreachable"),
            }
        }
    }

    /// This node as it registers now.
    fn info(&self, cpu: f64) -> (NodeInfo, Vec<String>) {
        let (names, participants, tracks) = self.inner.rooms.load();
        let c = &self.inner.config;
        let info = NodeInfo {
            id: c.node_id.clone(),
            url: c.node_url.clone(),
            media: c.media.clone(),
            rooms: names.len(),
            participants,
            tracks,
            cpu,
            draining: self.inner.drain.is_draining(),
            started_at: self.inner.started_at,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        (info, names)
    }

    async fn beat(&self, cpu: f64) -> Result<(), redis::RedisError> {
        let (info, names) = self.info(cpu);
        let me = &self.inner.config.node_id;
        let mut redis = self.redis();
        let json = serde_json::to_string(&info).unwrap_or_default();
        let draining = info.draining;
        redis::pipe()
            .set_options(
                self.key("node", me),
                json,
                redis::SetOptions::default()
                    .with_expiration(redis::SetExpiry::PX(millis(NODE_TTL))),
            )
            .ignore()
            .sadd(self.nodes_key(), me)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        // The rooms hosted here keep their claims (and get them back after a Redis restart).
        for name in &names {
            let ok: i32 = self
                .inner
                .scripts
                .refresh
                .key(self.key("room", name))
                .arg(me)
                .arg(millis(CLAIM_TTL))
                .invoke_async(&mut redis)
                .await?;
            if ok == 0 {
                let owner: Option<String> = redis.get(self.key("room", name)).await?;
                warn!(room = %name, owner = ?owner, "this node hosts a room another node holds \
                       (claimed there while the directory was unreachable); its participants \
                       are split until they rejoin");
            }
            self.held().insert(name.clone(), Instant::now());
        }
        // Claims of rooms no longer here are released (after a grace for joins on their way;
        // at once while draining, which takes no joins for rooms it does not hold).
        let grace = if draining {
            Duration::ZERO
        } else {
            CLAIM_GRACE
        };
        let stale: Vec<String> = {
            let mut held = self.held();
            let now = Instant::now();
            let stale: Vec<String> = held
                .iter()
                .filter(|(n, at)| {
                    !names.contains(n) && now.saturating_duration_since(**at) >= grace
                })
                .map(|(n, _)| n.clone())
                .collect();
            for n in &stale {
                held.remove(n);
            }
            stale
        };
        for name in stale {
            self.release(&mut redis, &name).await?;
        }
        Ok(())
    }

    async fn release(
        &self,
        redis: &mut ConnectionManager,
        room: &str,
    ) -> Result<(), redis::RedisError> {
        let _: i32 = self
            .inner
            .scripts
            .release
            .key(self.key("room", room))
            .arg(&self.inner.config.node_id)
            .invoke_async(redis)
            .await?;
        debug!(room, "room claim released");
        Ok(())
    }

    /// Leaves the directory (the end of a drain): the entry and every claim go, so that the
    /// rooms' participants, reconnecting, are placed on the other nodes.
    pub async fn leave(&self) {
        self.inner
            .left
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut redis = self.redis();
        let me = self.inner.config.node_id.clone();
        let rooms: Vec<String> = {
            let mut held = self.held();
            let mut names: Vec<String> = held.drain().map(|(n, _)| n).collect();
            names.extend(self.inner.rooms.load().0);
            names.sort();
            names.dedup();
            names
        };
        let result = async {
            for room in &rooms {
                self.release(&mut redis, room).await?;
            }
            redis::pipe()
                .del(self.key("node", &me))
                .ignore()
                .srem(self.nodes_key(), &me)
                .ignore()
                .query_async::<()>(&mut redis)
                .await
        }
        .await;
        match result {
            Ok(()) => info!(rooms = rooms.len(), "left the Redis directory"),
            Err(e) => warn!(%e, "could not leave the Redis directory (its entry expires anyway)"),
        }
    }

    /// Every live node, this one included once registered.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, RouteError> {
        let mut redis = self.redis();
        let ids: Vec<String> = redis.smembers(self.nodes_key()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key("node", id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await?;
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
                Some(node) => nodes.push(node),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: Result<(), _> = redis.srem(self.nodes_key(), &gone).await;
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, RouteError> {
        let mut redis = self.redis();
        let value: Option<String> = redis.get(self.key("node", id)).await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// The node for a new room under the placement policy (`None`: every node is draining).
    async fn place(&self) -> Result<Option<String>, RouteError> {
        let me = &self.inner.config.node_id;
        let here_ok = !self.inner.drain.is_draining();
        if self.inner.config.placement == Placement::ThisNodeFirst && here_ok {
            return Ok(Some(me.clone()));
        }
        let mut nodes = self.nodes().await?;
        nodes.retain(|n| !n.draining && (n.id != *me || here_ok));
        if here_ok && !nodes.iter().any(|n| n.id == *me) {
            // Not registered yet (just started): counts as idle.
            nodes.push(self.info(0.0).0);
        }
        Ok(nodes
            .into_iter()
            .min_by(|a, b| a.load_key().cmp(&b.load_key()).then(a.id.cmp(&b.id)))
            .map(|n| n.id))
    }

    /// Where `room` is, without placing it: `None` if no live node holds it.
    pub async fn locate(&self, room: &str) -> Result<Option<Route>, RouteError> {
        let mut redis = self.redis();
        let owner: Option<String> = redis.get(self.key("room", room)).await?;
        Ok(match owner {
            None => None,
            Some(owner) if owner == self.inner.config.node_id => Some(Route::Local),
            Some(owner) => self.node(&owner).await?.map(Route::Remote),
        })
    }

    /// Where `room` is served, placing it (claim in Redis) if it is nowhere yet. `forwarded`: the
    /// request came from another node, which found this node in the room's claim: it is served
    /// here unless the claim has moved on since.
    pub async fn route(&self, room: &str, forwarded: bool) -> Result<Route, RouteError> {
        let me = self.inner.config.node_id.clone();
        let key = self.key("room", room);
        let mut redis = self.redis();
        for _ in 0..8 {
            let owner: Option<String> = redis.get(&key).await?;
            match owner {
                Some(owner) if owner == me => {
                    self.held().insert(room.to_owned(), Instant::now());
                    return Ok(Route::Local);
                }
                Some(_) if forwarded => return Err(RouteError::Moved(room.to_owned())),
                Some(owner) => match self.node(&owner).await? {
                    Some(node) => return Ok(Route::Remote(node)),
                    None => {
                        // Its node is gone from the directory: the room is free to move.
                        let _: i32 = self
                            .inner
                            .scripts
                            .release
                            .key(&key)
                            .arg(&owner)
                            .invoke_async(&mut redis)
                            .await?;
                        info!(room, dead = %owner, "the room's node is gone; placing it again");
                    }
                },
                None => {
                    let target = if forwarded {
                        me.clone()
                    } else {
                        self.place().await?.ok_or(RouteError::NoNode)?
                    };
                    let claimed: bool = redis::cmd("SET")
                        .arg(&key)
                        .arg(&target)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(CLAIM_TTL))
                        .query_async::<Option<String>>(&mut redis)
                        .await?
                        .is_some();
                    if claimed {
                        info!(room, node = %target, "room placed");
                        if target == me {
                            self.held().insert(room.to_owned(), Instant::now());
                            return Ok(Route::Local);
                        }
                    }
                    // Lost the race, or placed elsewhere: the next round reads the claim.
                }
            }
        }
        Err(RouteError::Directory(format!(
            "the claim of room {room:?} keeps changing"
        )))
    }
}

/// The process's CPU use between two calls, from `/proc/self/stat` (Linux; 0 elsewhere).
struct CpuMeter {
    last: Option<(Instant, u64)>,
    cores: f64,
}

impl CpuMeter {
    fn new() -> CpuMeter {
        CpuMeter {
            last: None,
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        }
    }

    /// utime + stime in clock ticks (USER_HZ, 100 on Linux).
    fn ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    fn percent(&mut self) -> f64 {
        let now = Instant::now();
        let Some(ticks) = Self::ticks() else {
            return 0.0;
        };
        let percent = match self.last {
            Some((at, before)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64().max(0.001);
                (ticks.saturating_sub(before) as f64 / 100.0) / secs / self.cores * 100.0
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        (percent * 10.0).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_node_url_follows_the_bind_address() {
        assert_eq!(
            default_node_url("127.0.0.2:7880".parse().unwrap()),
            "http://127.0.0.2:7880"
        );
        let wildcard = default_node_url("0.0.0.0:7880".parse().unwrap());
        assert!(wildcard.starts_with("http://") && wildcard.ends_with(":7880"));
        assert!(!wildcard.contains("0.0.0.0"), "{wildcard}");
    }

    #[test]
    fn least_loaded_compares_media_work_then_cpu() {
        let node = |id: &str, participants, cpu| NodeInfo {
            id: id.into(),
            url: String::new(),
            media: Vec::new(),
            rooms: 0,
            participants,
            tracks: 0,
            cpu,
            draining: false,
            started_at: 0,
            version: String::new(),
        };
        assert!(node("a", 1, 90.0).load_key() > node("b", 0, 0.0).load_key());
        assert!(node("a", 2, 10.0).load_key() < node("b", 2, 20.0).load_key());
    }

    #[test]
    fn the_cpu_meter_reads_this_process() {
        let mut meter = CpuMeter::new();
        assert!(CpuMeter::ticks().is_some());
        assert_eq!(meter.percent(), 0.0);
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let p = meter.percent();
        assert!((0.0..=100.0).contains(&p), "{p}");
    }
}
