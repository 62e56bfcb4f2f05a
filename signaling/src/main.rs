//! The `fanout` binary: parse the command line, start the engine and the front end.

use std::process::ExitCode;

use clap::Parser;
use fanout_signaling::cli::{Cli, Command, LogFormat, ServeArgs};
use fanout_signaling::protocol::IceServer;
use fanout_signaling::server::{self, AppState};
use fanout_signaling::session::SessionContext;
use sfu::{Sfu, SfuConfig};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    error!(%err, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    error!("{err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FANOUT_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_srtp=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if !(0.0..=100.0).contains(&args.inject_loss) {
        return Err(format!(
            "--inject-loss must be between 0 and 100, got {}",
            args.inject_loss
        ));
    }
    if args.inject_loss > 0.0 {
        warn!(
            percent = args.inject_loss,
            "TESTING: dropping incoming RTP on purpose"
        );
    }
    if args.dev {
        info!("development mode (--dev)");
    }
    let announce_ips = args.announce_ips();
    let sfu = Sfu::start(SfuConfig {
        media_bind: args.media_bind(),
        announce_ips: announce_ips.clone(),
        inject_loss: args.inject_loss / 100.0,
        media_drivers: args.media_drivers(),
        ..SfuConfig::default()
    })
    .map_err(|e| format!("cannot bind the media port {}: {e}", args.media_bind()))?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", args.bind))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let ice_servers = if args.ice_servers.is_empty() {
        Vec::new()
    } else {
        vec![IceServer {
            urls: args.ice_servers.clone(),
            username: None,
            credential: None,
        }]
    };
    let state = AppState {
        session: SessionContext {
            sfu: sfu.clone(),
            ice_servers,
        },
        dev: args.dev,
    };
    let app = server::app(state, Some(args.static_dir.clone()));
    info!(
        http = %http_addr,
        media = ?sfu.media_addrs(),
        announce = ?announce_ips,
        static_dir = %args.static_dir.display(),
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
    println!(
        "Fanout is running. Open http://{host}:{}/?room=demo in two browser tabs.",
        http_addr.port()
    );
    server::run(listener, app, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
