//! The real `fanout` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fanout");

/// Numbers the servers' log files (in the temp directory) within one test process.
static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running `fanout serve` and its HTTP base URL (read from what it prints). Its log goes to
/// `fanout-binary-test-PID-N.log` in the temp directory.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub ws: String,
    pub log: PathBuf,
}

impl Server {
    /// `fanout serve` on 127.0.0.1 (HTTP and UDP on free ports, one media driver) with `args`
    /// and the environment `env` (no other `FANOUT_` variables).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_bind("127.0.0.1:0", args, env)
    }

    /// [`Server::start`] with HTTP on `bind` (and the media on its IP).
    pub fn start_bind(bind: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::env::temp_dir().join(format!(
            "fanout-binary-test-{}-{}.log",
            std::process::id(),
            SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--bind",
            bind,
            "--udp-port",
            "0",
            "--media-drivers",
            "1",
            "--static-dir",
            "/nonexistent",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&log).expect("server log file"),
        ));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANOUT_")) {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("fanout starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let start = line.find("://").expect("the server prints its URL") - 5;
        let url: String = line[start..]
            .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
            .split(['/', ' '])
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        let base = url.trim_end_matches('/').to_owned();
        let ws = base.replacen("http", "ws", 1) + "/ws";
        Server {
            child,
            base,
            ws,
            log,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to end; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Kills the process at once (SIGKILL): no drain, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A real `redis-server` (Debian package) on a free loopback port, without persistence, killed
/// when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Self::spawn(port);
        Redis {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    fn spawn(port: u16) -> Child {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return child;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills Redis (SIGKILL) and starts an empty one on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
