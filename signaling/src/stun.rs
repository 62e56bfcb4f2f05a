//! The server's public address, asked of a STUN server at start-up (`announce_stun`): a Binding
//! request from the media IP, whose XOR-MAPPED-ADDRESS is the address NAT maps it to. Behind a
//! 1:1 NAT (a cloud VM, a pod with a public IP) that is the address clients reach, on the same
//! port, so it is what the candidates announce.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use rtc::stun::message::{Getter, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::xoraddr::XorMappedAddress;

/// How long each try waits, and how many there are (RFC 5389's doubling would be overkill for a
/// one-off query at start-up; three evenly spaced tries ride over a lost datagram).
const TRY_TIMEOUT: Duration = Duration::from_millis(1500);
const TRIES: usize = 3;

/// `stun:host[:port]` or `host[:port]` → (host, port); the default port is 3478.
pub fn parse_server(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("stun:").unwrap_or(url);
    if rest.is_empty() || rest.contains('/') || rest.contains('?') {
        return Err(format!("{url:?} is not stun:HOST[:PORT]"));
    }
    // [v6]:port, [v6], v4:port, name:port, name
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
            None if after.is_empty() => 3478,
            None => return Err(format!("{url:?} is not stun:HOST[:PORT]")),
        };
        return Ok((host.to_owned(), port));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((
            host.to_owned(),
            port.parse().map_err(|_| format!("{url:?}: bad port"))?,
        )),
        Some(_) => Err(format!("{url:?}: write an IPv6 address in brackets")),
        None => Ok((rest.to_owned(), 3478)),
    }
}

/// Asks the STUN server `url` which address `local_ip` is seen as; returns that IP.
pub fn public_ip(local_ip: IpAddr, url: &str) -> Result<IpAddr, String> {
    let (host, port) = parse_server(url)?;
    let want_v6 = local_ip.is_ipv6() && !local_ip.is_unspecified();
    let server: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the STUN server {host}: {e}"))?
        .find(|a| a.is_ipv6() == want_v6)
        .ok_or_else(|| {
            format!(
                "the STUN server {host} has no IPv{} address",
                if want_v6 { 6 } else { 4 }
            )
        })?;
    let bind_ip = if local_ip.is_unspecified() && !want_v6 {
        IpAddr::from([0, 0, 0, 0])
    } else {
        local_ip
    };
    let socket = UdpSocket::bind((bind_ip, 0))
        .map_err(|e| format!("cannot bind a socket on {bind_ip} for the STUN query: {e}"))?;
    let mut request = Message::new();
    request
        .build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .map_err(|e| format!("cannot build a STUN request: {e}"))?;
    let mut buf = [0u8; 1500];
    for _ in 0..TRIES {
        socket
            .send_to(&request.raw, server)
            .map_err(|e| format!("cannot send to the STUN server {server}: {e}"))?;
        let deadline = Instant::now() + TRY_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // An ICMP unreachable from an earlier try; keep listening.
                Err(_) => continue,
            };
            if from != server {
                continue;
            }
            if let Some(ip) = mapped_ip(&buf[..n], &request.transaction_id) {
                return Ok(ip);
            }
        }
    }
    Err(format!(
        "no answer from the STUN server {server} within {:?} ({TRIES} tries)",
        TRY_TIMEOUT * TRIES as u32
    ))
}

/// The XOR-MAPPED-ADDRESS of a Binding success response to `transaction`.
fn mapped_ip(datagram: &[u8], transaction: &TransactionId) -> Option<IpAddr> {
    let mut response = Message::new();
    response.raw = datagram.to_vec();
    response.decode().ok()?;
    if response.typ != BINDING_SUCCESS || response.transaction_id != *transaction {
        return None;
    }
    let mut xor = XorMappedAddress::default();
    xor.get_from(&response).ok()?;
    Some(xor.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse() {
        assert_eq!(
            parse_server("stun:stun.example.org").unwrap(),
            ("stun.example.org".into(), 3478)
        );
        assert_eq!(
            parse_server("stun:192.0.2.1:19302").unwrap(),
            ("192.0.2.1".into(), 19302)
        );
        assert_eq!(parse_server("[::1]:5000").unwrap(), ("::1".into(), 5000));
        assert_eq!(parse_server("stun:[2001:db8::1]").unwrap().1, 3478);
        assert!(parse_server("stun:").is_err());
        assert!(parse_server("stun:host:port").is_err());
        assert!(parse_server("stun:2001:db8::1").is_err());
        assert!(parse_server("stun:h:1/x").is_err());
    }

    /// A real STUN exchange on loopback: a thread answers like a STUN server.
    #[test]
    fn asks_a_stun_server_and_reads_the_mapped_address() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            // Ignore the first try (as if lost), answer the second with a made-up mapping.
            let _ = server.recv_from(&mut buf).unwrap();
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let mut req = Message::new();
            req.raw = buf[..n].to_vec();
            req.decode().unwrap();
            assert_eq!(req.typ, BINDING_REQUEST);
            let mut res = Message::new();
            res.build(&[
                Box::new(req.transaction_id),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress {
                    ip: "203.0.113.7".parse().unwrap(),
                    port: from.port(),
                }),
            ])
            .unwrap();
            // Garbage first: it must be skipped.
            server.send_to(b"not stun at all", from).unwrap();
            server.send_to(&res.raw, from).unwrap();
        });
        let ip = public_ip("127.0.0.1".parse().unwrap(), &format!("stun:{addr}")).unwrap();
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        answering.join().unwrap();
    }

    #[test]
    fn a_silent_server_is_an_error_naming_it() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let err = public_ip("127.0.0.1".parse().unwrap(), &addr.to_string()).unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
