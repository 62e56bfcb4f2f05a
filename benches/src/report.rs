//! The report on the terminal, and the ramp chart as SVG.

use std::fmt::Write as _;

use crate::run::{RampStep, Report, Window};

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}{unit}"))
}

fn window_rows(w: &Window) -> Vec<(&'static str, String)> {
    vec![
        (
            "forwarding latency p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                w.latency_ms.p50, w.latency_ms.p99, w.latency_ms.max
            ),
        ),
        ("packet loss", format!("{:.3} %", w.loss_percent)),
        (
            "RTP in (publishers → server)",
            format!("{:.0} pkt/s, {:.1} Mbit/s", w.sent_pps, w.sent_mbps),
        ),
        (
            "RTP out (server → participants)",
            format!("{:.0} pkt/s, {:.1} Mbit/s", w.recv_pps, w.recv_mbps),
        ),
        (
            "server CPU / RSS",
            w.server.map_or("n/a (no --server-pid)".to_owned(), |s| {
                format!("{:.1} % of a core, {:.1} MB", s.cpu_percent, s.rss_mb)
            }),
        ),
        (
            "server CPU per forwarded packet",
            opt(w.server_us_per_forwarded_packet, " µs", 2),
        ),
        (
            "load tester CPU / RSS",
            format!(
                "{:.1} % of a core, {:.1} MB",
                w.loadtester.cpu_percent, w.loadtester.rss_mb
            ),
        ),
        ("machine busy", opt(w.machine_busy_percent, " %", 0)),
    ]
}

/// The report as an aligned two-column table.
pub fn table(r: &Report) -> String {
    let s = &r.scenario;
    let mut rows: Vec<(&str, String)> = vec![
        ("target", format!("{} at {}", r.target, s.url)),
        (
            "scenario",
            format!(
                "{} room(s) × ({} publishers + {} subscribers), {} layer(s){}",
                s.rooms,
                s.publishers,
                s.subscribers,
                s.video_layers,
                s.max_quality
                    .as_ref()
                    .map_or(String::new(), |q| format!(", max_quality {q}"))
            ),
        ),
        (
            "participants connected",
            format!("{} of {}", r.connected, r.participants),
        ),
        (
            "tracks reached",
            format!("{} of {}", r.tracks_reached, r.tracks_expected),
        ),
        (
            "join time p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                r.join_ms.p50, r.join_ms.p99, r.join_ms.max
            ),
        ),
        (
            "media connected (ICE + DTLS) p50 / p99",
            format!("{:.0} / {:.0} ms", r.connect_ms.p50, r.connect_ms.p99),
        ),
        ("window", format!("{:.1} s", r.window.seconds)),
    ];
    rows.extend(window_rows(&r.window));
    rows.push(("errors", r.errors.to_string()));
    if let Some(m) = r.max_usable_subscribers_per_room {
        rows.push((
            "max subscribers/room (< 1 % loss, p99 in limit)",
            m.to_string(),
        ));
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    if !r.ramp.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>10} {:>12} {:>10} {:>10} {:>9} {:>9} {:>11}",
            "subs/room", "participants", "server %", "tester %", "machine %", "loss %", "p99 ms"
        );
        for st in &r.ramp {
            let w = &st.window;
            let _ = writeln!(
                out,
                "{:>10} {:>12} {:>10} {:>10.1} {:>9} {:>9.3} {:>11.2}",
                st.subscribers_per_room,
                st.participants,
                opt(w.server.map(|s| s.cpu_percent), "", 1),
                w.loadtester.cpu_percent,
                opt(w.machine_busy_percent, "", 0),
                w.loss_percent,
                w.latency_ms.p99
            );
        }
    }
    for e in &r.error_log {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// A line chart of CPU (server, load tester, machine) and loss against subscribers per room.
pub fn ramp_svg(title: &str, steps: &[RampStep]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 400.0;
    const L: f64 = 60.0;
    const R: f64 = 60.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let xs: Vec<f64> = steps
        .iter()
        .map(|s| s.subscribers_per_room as f64)
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0_f64, f64::max),
    );
    let x1 = if x1 <= x0 { x0 + 1.0 } else { x1 };
    let cpu_max = steps
        .iter()
        .flat_map(|s| {
            [
                s.window.server.map_or(0.0, |p| p.cpu_percent),
                s.window.loadtester.cpu_percent,
                s.window.machine_busy_percent.unwrap_or(0.0)
                    * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            ]
        })
        .fold(100.0_f64, f64::max);
    let loss_max = steps
        .iter()
        .map(|s| s.window.loss_percent)
        .fold(2.0_f64, f64::max);
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |v: f64, max: f64| H - B - v / max * (H - T - B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
<line x1="{}" y1="{T}" x2="{}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">subscribers per room</text>
<text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">CPU (% of one core)</text>
<text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle" fill="#c00">loss (%)</text>
"##,
        W / 2.0,
        xml_escape(title),
        H - B,
        W - R,
        H - B,
        H - B,
        W - R,
        W - R,
        H - B,
        W / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0,
        W - 15.0,
        H / 2.0,
        W - 15.0,
        H / 2.0,
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let y = py(f * cpu_max, cpu_max);
        let _ = writeln!(
            svg,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}</text><text x="{}" y="{:.1}" fill="#c00">{:.1}</text>"##,
            W - R,
            L - 5.0,
            y + 4.0,
            f * cpu_max,
            W - R + 5.0,
            y + 4.0,
            f * loss_max
        );
    }
    for s in steps {
        let x = px(s.subscribers_per_room as f64);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - B + 15.0,
            s.subscribers_per_room
        );
    }
    type Series<'a> = (&'a str, &'a str, Box<dyn Fn(&RampStep) -> Option<f64>>, f64);
    let series: [Series; 3] = [
        (
            "server CPU",
            "#1f5fbf",
            Box::new(|s| s.window.server.map(|p| p.cpu_percent)),
            cpu_max,
        ),
        (
            "load tester CPU",
            "#888",
            Box::new(|s| Some(s.window.loadtester.cpu_percent)),
            cpu_max,
        ),
        (
            "loss",
            "#c00",
            Box::new(|s| Some(s.window.loss_percent)),
            loss_max,
        ),
    ];
    for (i, (name, color, value, max)) in series.iter().enumerate() {
        let points: Vec<String> = steps
            .iter()
            .filter_map(|s| {
                value(s).map(|v| {
                    format!(
                        "{:.1},{:.1}",
                        px(s.subscribers_per_room as f64),
                        py(v, *max)
                    )
                })
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = T + 15.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            L + 10.0,
            L + 30.0,
            L + 35.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
