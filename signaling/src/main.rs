//! The `fanout` binary: read the configuration, then serve, print it, or make a token.

use std::process::ExitCode;

use clap::Parser;
use fanout_signaling::auth::{parse_ttl, Grants, TokenAuthority};
use fanout_signaling::cli::{Cli, Command, HealthcheckArgs, SettingsArgs, TokenArgs, TokenCommand};
use fanout_signaling::config::{self, LogFormat, Overrides, Settings};
use fanout_signaling::server::{self, DrainEnd};
use fanout_signaling::turn::{EmbeddedTurn, TurnConfig};
use rand::distr::{Alphanumeric, SampleString};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Exit code of a configuration error (a usage error, like clap's own).
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Config(args) => match settings(&args) {
            Ok(s) => {
                print!("{}", s.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Token(TokenCommand::Create(args)) => token_create(&args),
        Command::Healthcheck(args) => healthcheck(&args),
    }
}

/// Probes /healthz of the configured server; exit 0 if it answers 200.
fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            // The server's own configuration says where it listens; keys are not needed here.
            let mut overrides = args.settings.overrides();
            overrides.set("dev", true);
            let settings = match config::load(
                args.settings.config.as_deref(),
                std::env::vars(),
                &overrides,
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fanout healthcheck: {e}");
                    return ExitCode::from(CONFIG_ERROR);
                }
            };
            let ip = settings.bind.ip();
            let host = match ip {
                ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_owned(),
                ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            };
            let scheme = if settings.tls() { "https" } else { "http" };
            format!("{scheme}://{host}:{}/healthz", settings.bind.port())
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    server::install_crypto_provider();
    let timeout = std::time::Duration::from_secs_f64(args.timeout.clamp(0.1, 60.0));
    let result = runtime.block_on(async {
        // A local liveness probe: the certificate names the public host, not this address.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", response.status()))
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn settings(args: &SettingsArgs) -> Result<Settings, ExitCode> {
    config::load(args.config.as_deref(), std::env::vars(), &args.overrides()).map_err(|e| {
        eprintln!("fanout: {e}");
        ExitCode::from(CONFIG_ERROR)
    })
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Starts the embedded TURN server if configured (by default in `--dev`) and adds it to the
/// TURN servers handed to clients. In `--dev` without an explicit `turn_embedded`, a port in use
/// only costs a warning.
async fn start_turn(
    settings: &mut Settings,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> Result<Option<EmbeddedTurn>, String> {
    if !settings.turn_embedded() {
        return Ok(None);
    }
    let announce = settings.announce_ips();
    let media_ip = settings.media_bind().ip();
    let relay_announce = announce.first().copied().unwrap_or(media_ip);
    let relay_bind = if media_ip.is_unspecified() && media_ip.is_ipv4() != relay_announce.is_ipv4()
    {
        std::net::IpAddr::from([0, 0, 0, 0])
    } else {
        media_ip
    };
    let secret = settings
        .turn_secret
        .clone()
        .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::rng(), 32));
    let config = TurnConfig {
        listen: std::net::SocketAddr::new(relay_bind, settings.turn_port),
        relay_bind,
        relay_announce,
        relay_ports: settings.turn_relay_range().map_err(|e| e.to_string())?,
        realm: settings.turn_realm.clone(),
        secret: secret.clone(),
        max_allocations_per_user: settings.turn_max_allocations,
        allowed_peers: Vec::new(),
        hairpin: settings
            .nat_pairs()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(private, public)| (public, private))
            .collect(),
        tls: match (settings.turn_tls_port, tls) {
            (Some(port), Some(tls)) => Some((std::net::SocketAddr::new(relay_bind, port), tls)),
            _ => None,
        },
    };
    let turn = match EmbeddedTurn::start(config).await {
        Ok(t) => t,
        Err(err) if settings.turn_embedded.is_none() => {
            warn!("{err}: running without the embedded TURN server");
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let urls = fanout_signaling::turn::client_urls(
        settings.turn_host.as_deref(),
        relay_announce,
        turn.local_addr().port(),
        turn.tls_addr().map(|a| a.port()),
    );
    settings.turn_urls.extend(urls);
    settings.turn_secret = Some(secret);
    Ok(Some(turn))
}

fn serve(args: &SettingsArgs) -> ExitCode {
    let settings = match settings(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            eprintln!("fanout: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut settings: Settings) -> Result<(), String> {
    let mut signals = Signals::install()?;
    if let Some(url) = settings.announce_stun.clone() {
        let local = settings.media_bind().ip();
        let stun = url.clone();
        let ip =
            tokio::task::spawn_blocking(move || fanout_signaling::stun::public_ip(local, &stun))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("announce_stun: {e}"))?;
        info!(%ip, stun = %url, "announcing the public address the STUN server sees");
        settings.announce_ips = vec![ip];
    }
    if settings.inject_loss > 0.0 {
        warn!(
            percent = settings.inject_loss,
            "TESTING: dropping incoming RTP on purpose"
        );
    }
    if settings.dev {
        info!(
            "development mode (--dev): joins need no token; /dev/token and /debug/rooms are open"
        );
        if settings.api_key.is_some() {
            warn!(
                "--dev with real keys: /dev/token signs tokens that any server with these keys \
                 accepts; it answers only this host's loopback clients. Do not run --dev in production"
            );
        }
    }
    let tls = server::tls_config(&settings).await?;
    let turn_tls = server::turn_tls_config(&settings, tls.as_ref()).await?;
    let turn = start_turn(&mut settings, turn_tls).await?;
    // HTTP is bound first: with port 0, the port it got is this node's address in a cluster.
    let listener = std::net::TcpListener::bind(settings.bind)
        .map_err(|e| format!("cannot bind {}: {e}", settings.bind))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    settings.bind = http_addr;
    let state = server::build(&settings)?;
    if let Some(turn) = &turn {
        // Relays may reach this server's media ports, at the addresses it announces.
        let ports: Vec<u16> = state.sfu().media_addrs().iter().map(|a| a.port()).collect();
        let peers = settings
            .announce_ips()
            .into_iter()
            .flat_map(|ip| ports.iter().map(move |p| std::net::SocketAddr::new(ip, *p)))
            .collect();
        turn.allow_peers(peers);
    }
    let app = server::app(state.clone(), Some(settings.static_dir.clone()));
    let handle = server::Handle::new();
    let mut http = tokio::spawn(server::serve(listener, app, tls, handle.clone()));
    info!(
        http = %http_addr,
        tls = settings.tls(),
        media = ?state.sfu().media_addrs(),
        announce = ?settings.announce_ips(),
        static_dir = %settings.static_dir.display(),
        "Fanout is running"
    );
    let host = if http_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        http_addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if settings.tls() { "https" } else { "http" };
    if settings.dev {
        println!(
            "Fanout is running. Open {scheme}://{host}:{}/?room=demo in two browser tabs.",
            http_addr.port()
        );
    } else {
        println!(
            "Fanout is running on {scheme}://{host}:{}/ (joins need an access token: \
             `fanout token create --room demo --identity alice`, then open \
             {scheme}://{host}:{}/?room=demo&token=TOKEN).",
            http_addr.port(),
            http_addr.port()
        );
    }
    tokio::select! {
        _ = signals.recv() => {}
        result = &mut http => {
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("HTTP server failed: {e}")),
                Err(e) => Err(format!("HTTP server failed: {e}")),
            };
        }
    }
    let end = server::drain(&state, &handle, settings.drain_timeout, signals.recv()).await;
    if end != DrainEnd::Forced {
        // Let HTTP finish its graceful shutdown (at most the second it was given).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), http).await;
    }
    info!(?end, "stopped");
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this exists: created before the server answers
/// anything, so a signal sent as soon as /healthz answers drains rather than kills.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
            let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
            Ok(Signals { term, int })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn token_create(args: &TokenArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("fanout token create: {msg}");
        ExitCode::from(CONFIG_ERROR)
    };
    // The key and secret come from the same configuration as the server's.
    let settings = match config::load(
        args.config.as_deref(),
        std::env::vars(),
        &Overrides::default(),
    ) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let (Some(key), Some(secret)) = (&settings.api_key, &settings.api_secret) else {
        return fail(
            "api_key and api_secret are not configured (set them in the --config file or as \
             FANOUT_API_KEY and FANOUT_API_SECRET)"
                .into(),
        );
    };
    let mut grants = match Grants::parse_list(&args.grants) {
        Ok(g) => g,
        Err(e) => return fail(format!("--grants: {e}")),
    };
    if let Some(sources) = &args.sources {
        let list: Vec<String> = sources
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = list.iter().find(|s| sfu::TrackSource::parse(s).is_none()) {
            return fail(format!(
                "--sources: unknown source {bad:?} (known: camera, microphone, screen)"
            ));
        }
        grants.sources = Some(list);
    }
    if grants.join && args.room.is_none() {
        return fail("--room is required for a token with the join grant".into());
    }
    let ttl = match parse_ttl(&args.ttl) {
        Ok(t) => t,
        Err(e) => return fail(format!("--ttl: {e}")),
    };
    match TokenAuthority::new(key, secret).create(
        &args.identity,
        args.name.as_deref(),
        args.room.as_deref(),
        grants,
        ttl,
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
