//! A load run: participants join rooms, media flows, and a measurement window is taken.
//!
//! Everything runs on the calling thread's `LocalSet`: one task per connection and one per
//! signaling session, all driven by one core, so the load tester's own cost stays small and is
//! reported next to the server's.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::{Conn, ConnReport, ConnSpec, Counters, Publish};
use crate::janus::{self, JanusJoin, PublisherJoin, SubscriberJoin};
use crate::procstat::{self, Sample};
use crate::signal::{self, FanoutJoin, SigIn, SigOut};

/// The server under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Target {
    /// Fanout's WebSocket signaling; one connection per participant.
    #[default]
    Fanout,
    /// Janus' VideoRoom over its WebSocket transport. Janus publishes and subscribes on separate
    /// connections: a publisher participant is a publishing connection plus a receiving one
    /// subscribed to the room's other publishers, a subscriber one receiving connection.
    Janus,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Janus => "janus",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub url: String,
    pub rooms: usize,
    /// Per room.
    pub publishers: usize,
    /// Per room, receive-only.
    pub subscribers: usize,
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    #[serde(serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Participants started per second.
    pub join_rate: f64,
    pub bind_ip: IpAddr,
    pub server_pid: Option<u32>,
    /// `max_quality` every subscriber asks for (`low`, `medium`, `high`); none: the server's
    /// default (the top layer).
    pub max_quality: Option<String>,
    /// Simulcast layers per publisher (0–3).
    pub video_layers: usize,
    pub audio: bool,
    pub room_prefix: String,
    /// Signs an access token per participant (its name as identity, its room), for servers
    /// outside `--dev`.
    #[serde(skip)]
    pub tokens: Option<fanout_signaling::auth::TokenAuthority>,
    #[serde(skip)]
    pub progress: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// p50, p99 and max of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub count: u64,
}

impl Percentiles {
    fn of_micros(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
            max: h.max() as f64 / 1000.0,
            count: h.len(),
        }
    }
}

/// CPU and memory of one process over the measurement window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcReport {
    pub pid: u32,
    /// Percent of one core.
    pub cpu_percent: f64,
    pub rss_mb: f64,
}

/// What one measurement window saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    pub seconds: f64,
    pub latency_ms: Percentiles,
    pub loss_percent: f64,
    /// RTP sent by publishers (what the server receives).
    pub sent_pps: f64,
    pub sent_mbps: f64,
    /// RTP received by all participants (what the server forwards).
    pub recv_pps: f64,
    pub recv_mbps: f64,
    pub server: Option<ProcReport>,
    pub loadtester: ProcReport,
    /// Server CPU time per forwarded (received) packet, in microseconds.
    pub server_us_per_forwarded_packet: Option<f64>,
    pub machine_busy_percent: Option<f64>,
    pub errors: u64,
}

/// One step of a ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub subscribers_per_room: usize,
    pub participants: usize,
    pub window: Window,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub scenario: Scenario,
    pub participants: usize,
    pub connected: u64,
    pub tracks_expected: u64,
    pub tracks_reached: u64,
    pub join_ms: Percentiles,
    /// Start of a join to its media connection up (ICE and DTLS).
    pub connect_ms: Percentiles,
    pub window: Window,
    pub ramp: Vec<RampStep>,
    /// The most subscribers per room of a ramp step with < 1 % loss and latency p99 under the
    /// ramp's limit.
    pub max_usable_subscribers_per_room: Option<usize>,
    pub errors: u64,
    pub error_log: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    sent_packets: u64,
    sent_bytes: u64,
    recv_packets: u64,
    recv_bytes: u64,
    expected: u64,
    errors: u64,
}

impl Totals {
    fn read(c: &Counters) -> Self {
        Self {
            sent_packets: c.sent_packets.load(Ordering::Relaxed),
            sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
            recv_packets: c.recv_packets.load(Ordering::Relaxed),
            recv_bytes: c.recv_bytes.load(Ordering::Relaxed),
            expected: c.expected_packets.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

/// A run in progress: the participants started so far and the shared counters.
pub struct Run {
    pub scenario: Scenario,
    pub target: Target,
    pub counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    /// Every connection, with the index of its participant.
    conns: Vec<(usize, JoinHandle<ConnReport>)>,
    participants: usize,
    /// Janus rooms are numbered from here: fresh rooms for every run.
    janus_room_base: u64,
    next_join: Instant,
    /// Subscribers started per room so far.
    subscribers: usize,
    tracks_expected: u64,
}

impl Run {
    pub fn new(scenario: Scenario) -> Self {
        Self::against(Target::Fanout, scenario)
    }

    pub fn against(target: Target, scenario: Scenario) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            scenario,
            target,
            counters: Arc::new(Counters::default()),
            stop,
            conns: Vec::new(),
            participants: 0,
            janus_room_base: rand::random_range(1_000..1_000_000) * 1_000,
            next_join: Instant::now(),
            subscribers: 0,
            tracks_expected: 0,
        }
    }

    fn tracks_per_publisher(&self) -> u64 {
        u64::from(self.scenario.audio) + u64::from(self.scenario.video_layers > 0)
    }

    pub fn participants(&self) -> usize {
        self.participants
    }

    /// Starts one connection of participant `participant` and its signaling backend.
    fn start_conn<B, F>(
        &mut self,
        participant: usize,
        name: String,
        publish: Option<Publish>,
        started: Instant,
        backend: B,
    ) where
        B: FnOnce(
            mpsc::UnboundedSender<SigIn>,
            mpsc::UnboundedReceiver<SigOut>,
            watch::Receiver<bool>,
        ) -> F,
        F: Future<Output = ()> + 'static,
    {
        let (to_conn, from_sig) = mpsc::unbounded_channel();
        let (to_sig, from_conn) = mpsc::unbounded_channel();
        let spec = ConnSpec {
            name: name.clone(),
            bind_ip: self.scenario.bind_ip,
            publish,
            started,
        };
        match Conn::new(
            spec,
            self.counters.clone(),
            from_sig,
            to_sig,
            self.stop.subscribe(),
        ) {
            Ok(conn) => {
                tokio::task::spawn_local(backend(to_conn, from_conn, self.stop.subscribe()));
                self.conns
                    .push((participant, tokio::task::spawn_local(conn.run())));
            }
            Err(err) => self
                .counters
                .error(&name, format!("connection setup: {err}")),
        }
    }

    /// Starts one participant (paced by the join rate). Must run inside a `LocalSet`.
    async fn start_participant(&mut self, room: usize, publisher: bool, index: usize) {
        let s = self.scenario.clone();
        let now = Instant::now();
        if self.next_join > now {
            tokio::time::sleep_until(self.next_join.into()).await;
        }
        self.next_join = self.next_join.max(now) + Duration::from_secs_f64(1.0 / s.join_rate);
        let name = format!(
            "{}{}-{}",
            if publisher { "pub" } else { "sub" },
            room,
            index
        );
        let started = Instant::now();
        let participant = self.participants;
        self.participants += 1;
        let publish = publisher.then_some(Publish {
            audio: s.audio,
            video_layers: s.video_layers,
        });
        match self.target {
            Target::Fanout => {
                let room = format!("{}{room}", s.room_prefix);
                let token = s.tokens.as_ref().and_then(|t| {
                    t.create(
                        &name,
                        None,
                        Some(&room),
                        fanout_signaling::auth::Grants::default(),
                        Duration::from_secs(24 * 3600),
                    )
                    .ok()
                });
                let join = FanoutJoin {
                    ws_url: signal::ws_endpoint(&s.url),
                    room,
                    name: name.clone(),
                    max_quality: s.max_quality.clone(),
                    token,
                };
                self.start_conn(participant, name, publish, started, |i, o, stop| {
                    signal::fanout(join, i, o, stop)
                });
            }
            Target::Janus => {
                let join = JanusJoin {
                    ws_url: s.url.trim_end_matches('/').to_owned(),
                    room: self.janus_room_base + room as u64,
                    display: name.clone(),
                };
                // Feed ids are fixed: publisher p of a room is feed p + 1.
                let own_feed = publisher.then_some(index as u64 + 1);
                let feeds: Vec<u64> = (1..=s.publishers as u64)
                    .filter(|f| Some(*f) != own_feed)
                    .collect();
                let substream = janus::substream_for(s.max_quality.as_deref());
                if let Some(feed) = own_feed {
                    let p = PublisherJoin {
                        join: join.clone(),
                        feed,
                        room_publishers: s.publishers,
                    };
                    self.start_conn(participant, name.clone(), publish, started, |i, o, stop| {
                        janus::publisher(p, i, o, stop)
                    });
                }
                if !feeds.is_empty() {
                    let sub = SubscriberJoin {
                        join: JanusJoin {
                            display: format!("{name}-recv"),
                            ..join
                        },
                        feeds,
                        substream,
                    };
                    self.start_conn(
                        participant,
                        sub.join.display.clone(),
                        None,
                        started,
                        |i, o, stop| janus::subscriber(sub, i, o, stop),
                    );
                }
            }
        }
        // Everyone receives every publisher but itself.
        let publishers = self.scenario.publishers as u64;
        self.tracks_expected += self.tracks_per_publisher()
            * if publisher {
                publishers.saturating_sub(1)
            } else {
                publishers
            };
    }

    /// Starts the scenario's publishers and subscribers in every room.
    pub async fn start(&mut self) {
        for room in 0..self.scenario.rooms {
            for p in 0..self.scenario.publishers {
                self.start_participant(room, true, p).await;
            }
        }
        let subs = self.scenario.subscribers;
        self.add_subscribers(subs).await;
    }

    /// Adds `n` subscribers to every room.
    pub async fn add_subscribers(&mut self, n: usize) {
        for i in self.subscribers..self.subscribers + n {
            for room in 0..self.scenario.rooms {
                self.start_participant(room, false, i).await;
            }
        }
        self.subscribers += n;
    }

    pub fn tracks_reached(&self) -> u64 {
        self.counters.tracks_reached.load(Ordering::Relaxed)
    }

    /// Waits until every participant receives every track it should, or `limit` passes.
    pub async fn wait_settled(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.tracks_reached() >= self.tracks_expected {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Measures for `length`, showing progress if asked.
    pub async fn measure(&self, length: Duration, label: &str) -> Window {
        let pid = self.scenario.server_pid;
        let me = std::process::id();
        let bar = if self.scenario.progress {
            let bar = ProgressBar::new(length.as_secs().max(1));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
                    .expect("progress template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        } else {
            ProgressBar::hidden()
        };
        self.counters.latency_us.lock().expect("latency").reset();
        let t0 = Totals::read(&self.counters);
        let (s0, m0) = (Sample::take(pid), Sample::take(Some(me)));
        let start = Instant::now();
        let mut last = (t0, s0);
        while start.elapsed() < length {
            let left = length.saturating_sub(start.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            let (t, s) = (Totals::read(&self.counters), Sample::take(pid));
            let secs = s.at.duration_since(last.1.at).as_secs_f64().max(1e-9);
            let loss = loss_percent(&last.0, &t);
            bar.set_position(start.elapsed().as_secs());
            bar.set_message(format!(
                "rx {:.0} pkt/s  loss {:.2} %  server cpu {}  errors {}",
                (t.recv_packets - last.0.recv_packets) as f64 / secs,
                loss,
                last.1
                    .cpu_percent(&s)
                    .map_or("n/a".to_owned(), |c| format!("{c:.0} %")),
                t.errors
            ));
            last = (t, s);
        }
        bar.finish_and_clear();
        let t1 = Totals::read(&self.counters);
        let (s1, m1) = (Sample::take(pid), Sample::take(Some(me)));
        let secs = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
        let recv_packets = t1.recv_packets - t0.recv_packets;
        let server = pid.and_then(|pid| {
            Some(ProcReport {
                pid,
                cpu_percent: s0.cpu_percent(&s1)?,
                rss_mb: procstat::rss_bytes(pid)? as f64 / 1048576.0,
            })
        });
        Window {
            seconds: secs,
            latency_ms: Percentiles::of_micros(&self.counters.latency_us.lock().expect("latency")),
            loss_percent: loss_percent(&t0, &t1),
            sent_pps: (t1.sent_packets - t0.sent_packets) as f64 / secs,
            sent_mbps: (t1.sent_bytes - t0.sent_bytes) as f64 * 8.0 / secs / 1e6,
            recv_pps: recv_packets as f64 / secs,
            recv_mbps: (t1.recv_bytes - t0.recv_bytes) as f64 * 8.0 / secs / 1e6,
            server_us_per_forwarded_packet: s0
                .cpu_seconds(&s1)
                .filter(|_| recv_packets > 0)
                .map(|cpu| cpu * 1e6 / recv_packets as f64),
            server,
            loadtester: ProcReport {
                pid: me,
                cpu_percent: m0.cpu_percent(&m1).unwrap_or(0.0),
                rss_mb: procstat::rss_bytes(me).unwrap_or(0) as f64 / 1048576.0,
            },
            machine_busy_percent: s0.machine_busy_percent(&s1),
            errors: t1.errors - t0.errors,
        }
    }

    /// Stops every connection and collects what they report, one report per participant (a
    /// participant with several connections is connected when all of them are).
    pub async fn stop(self) -> (Vec<ConnReport>, Arc<Counters>, u64) {
        let _ = self.stop.send(true);
        let mut reports: Vec<Option<ConnReport>> = vec![None; self.participants];
        for (participant, h) in self.conns {
            let r = h.await.unwrap_or_default();
            let merged = match reports[participant].take() {
                None => r,
                Some(m) => ConnReport {
                    connected: m.connected && r.connected,
                    tracks_received: m.tracks_received + r.tracks_received,
                    join_time: match (m.join_time, r.join_time) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                },
            };
            reports[participant] = Some(merged);
        }
        let reports = reports.into_iter().flatten().collect();
        // Let the signaling tasks say goodbye.
        tokio::time::sleep(Duration::from_millis(200)).await;
        (reports, self.counters, self.tracks_expected)
    }
}

fn loss_percent(a: &Totals, b: &Totals) -> f64 {
    let expected = b.expected.saturating_sub(a.expected);
    let received = b.recv_packets.saturating_sub(a.recv_packets);
    if expected == 0 {
        return 0.0;
    }
    (expected.saturating_sub(received)) as f64 / expected as f64 * 100.0
}

/// Whether a measurement window shows a server keeping up: loss under 1 %, latency p99 under
/// `max_p99_ms`.
fn usable(w: &Window, max_p99_ms: f64) -> bool {
    w.loss_percent < 1.0 && w.latency_ms.p99 < max_p99_ms
}

/// Options of a ramp: after the scenario's own subscribers, add `step` per room at a time.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub step: usize,
    pub step_duration: Duration,
    pub max_subscribers: usize,
    /// The machine counts as saturated above this busy percentage.
    pub saturated_percent: f64,
    /// A step is usable with loss under 1 % and a forwarding latency p99 under this (queues
    /// growing somewhere show up as latency before they overflow into loss).
    pub max_p99_ms: f64,
}

/// Runs a scenario (and a ramp, if given) against Fanout and reports. Must run inside a
/// `LocalSet`.
pub async fn run(scenario: Scenario, ramp: Option<Ramp>) -> Report {
    run_against(Target::Fanout, scenario, ramp).await
}

/// Runs a scenario (and a ramp, if given) against `target` and reports. Must run inside a
/// `LocalSet`.
pub async fn run_against(target: Target, scenario: Scenario, ramp: Option<Ramp>) -> Report {
    let mut run = Run::against(target, scenario.clone());
    run.start().await;
    let settle_limit = Duration::from_secs(20)
        + Duration::from_secs_f64(run.participants() as f64 / scenario.join_rate);
    if !run.wait_settled(settle_limit).await {
        run.counters.error(
            "run",
            format!(
                "only {} of {} tracks reached their receivers within {settle_limit:?}",
                run.tracks_reached(),
                run.tracks_expected
            ),
        );
    }
    tokio::time::sleep(scenario.warmup).await;
    let mut steps = Vec::new();
    let window = if let Some(ramp) = ramp {
        loop {
            let label = format!("{:>4} subs/room", run.subscribers);
            let w = run.measure(ramp.step_duration, &label).await;
            let stop = !usable(&w, ramp.max_p99_ms)
                || w.machine_busy_percent.unwrap_or(0.0) >= ramp.saturated_percent
                || run.subscribers + ramp.step > ramp.max_subscribers;
            if scenario.progress {
                eprintln!(
                    "{label}: loss {:.2} %, server cpu {}, machine {:.0} %, latency p99 {:.1} ms",
                    w.loss_percent,
                    w.server
                        .map_or("n/a".to_owned(), |s| format!("{:.0} %", s.cpu_percent)),
                    w.machine_busy_percent.unwrap_or(0.0),
                    w.latency_ms.p99
                );
            }
            steps.push(RampStep {
                subscribers_per_room: run.subscribers,
                participants: run.participants(),
                window: w.clone(),
            });
            if stop {
                break w;
            }
            run.add_subscribers(ramp.step).await;
            run.wait_settled(Duration::from_secs(20)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    } else {
        run.measure(scenario.duration, "measuring").await
    };
    let participants = run.participants();
    let tracks_reached = run.tracks_reached();
    let (reports, counters, tracks_expected) = run.stop().await;
    let join_ms = Percentiles::of_micros(&counters.join_us.lock().expect("join"));
    let connect_ms = Percentiles::of_micros(&counters.connect_us.lock().expect("connect"));
    let error_log = counters.error_log.lock().expect("error log").clone();
    let max_ok = steps
        .iter()
        .filter(|s| ramp.is_some_and(|r| usable(&s.window, r.max_p99_ms)))
        .map(|s| s.subscribers_per_room)
        .max();
    Report {
        target: target.name().into(),
        scenario,
        participants,
        connected: reports.iter().filter(|r| r.connected).count() as u64,
        tracks_expected,
        tracks_reached,
        join_ms,
        connect_ms,
        window,
        ramp: steps,
        max_usable_subscribers_per_room: max_ok,
        errors: counters.errors.load(Ordering::Relaxed),
        error_log,
    }
}
