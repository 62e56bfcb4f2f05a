//! The embedded TURN server against a real TURN client (webrtc-rs's `turn` client) on loopback:
//! credentials in the TURN REST scheme (the ones `joined` hands out) allocate a relay in the
//! configured port range that reaches this server's media address both ways; expired or wrong
//! credentials allocate nothing; a relay cannot reach any other address (403, nothing arrives);
//! one identity holds at most its quota of allocations (486), and gets one again after closing
//! one, or (over TCP) once the connection that held it closed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::read_stun;
use fanout_signaling::auth::unix_now;
use fanout_signaling::ice::turn_credentials;
use fanout_signaling::turn::{EmbeddedTurn, TurnConfig};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET: &str = "embedded-turn-test-secret";
const PORTS: (u16, u16) = (51300, 51399);

async fn client(server: SocketAddr, username: &str, password: &str) -> Client {
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let c = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "fanout".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

async fn for_identity(server: SocketAddr, identity: &str, expires: u64) -> Client {
    let (user, pass) = turn_credentials(SECRET, identity, expires);
    client(server, &user, &pass).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_turn_relays_to_the_media_port_only_with_valid_credentials_within_quota() {
    let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let turn = EmbeddedTurn::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_bind: "127.0.0.1".parse().unwrap(),
        relay_announce: "127.0.0.1".parse().unwrap(),
        relay_ports: PORTS,
        realm: "fanout".into(),
        secret: SECRET.into(),
        max_allocations_per_user: 2,
        allowed_peers: Vec::new(),
        hairpin: Vec::new(),
        tls: None,
    })
    .await
    .unwrap();
    turn.allow_peers(vec![media.local_addr().unwrap()]);
    let server = turn.local_addr();
    let later = unix_now() + 600;

    // Valid credentials: a relay in the range, reaching the media socket and answered through it.
    let alice = for_identity(server, "alice", later).await;
    let relay = alice
        .allocate()
        .await
        .expect("allocation with valid credentials");
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((PORTS.0..=PORTS.1).contains(&relayed.port()), "{relayed}");
    relay
        .send_to(b"media please", media.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(Duration::from_secs(5), media.recv_from(&mut buf))
        .await
        .expect("the media socket receives through the relay")
        .unwrap();
    assert_eq!(&buf[..n], b"media please");
    assert_eq!(from.port(), relayed.port(), "it comes from the relay");
    media.send_to(b"here it is", from).await.unwrap();
    let (n, _) = timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
        .await
        .expect("the answer comes back through the relay")
        .unwrap();
    assert_eq!(&buf[..n], b"here it is");

    // Any other address is refused: no permission, nothing arrives.
    let sent = relay
        .send_to(b"let me in", elsewhere.local_addr().unwrap())
        .await;
    let arrived = timeout(Duration::from_millis(1500), elsewhere.recv_from(&mut buf)).await;
    assert!(
        arrived.is_err(),
        "a relay must not reach {elsewhere:?} (send: {sent:?})"
    );

    // Expired and wrongly signed credentials allocate nothing.
    let expired = for_identity(server, "bob", unix_now() - 10).await;
    assert!(expired.allocate().await.is_err(), "expired credentials");
    let (user, _) = turn_credentials(SECRET, "mallory", later);
    let forged = client(server, &user, "not-the-password").await;
    assert!(forged.allocate().await.is_err(), "forged password");

    // Quota: alice holds one; a second is fine, a third is refused (486)...
    let alice2 = for_identity(server, "alice", later).await;
    let second = alice2
        .allocate()
        .await
        .expect("second allocation within quota");
    let alice3 = for_identity(server, "alice", later).await;
    let refused = alice3.allocate().await;
    let Err(err) = refused else {
        panic!("a third allocation must be refused");
    };
    assert!(err.to_string().contains("486"), "{err}");
    // ...others are not affected...
    let carol = for_identity(server, "carol", later).await;
    carol.allocate().await.expect("another identity allocates");
    // ...and after alice closes one, she may allocate again.
    second.close().await.unwrap();
    let alice4 = for_identity(server, "alice", later).await;
    let mut again = Err(String::new());
    for _ in 0..20 {
        match alice4.allocate().await {
            Ok(r) => {
                again = Ok(r);
                break;
            }
            Err(e) => {
                again = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        again.is_ok(),
        "allocation after closing one: {:?}",
        again.err()
    );
    turn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_speaks_stun_and_turn_on_the_certificates_stream() {
    use rtc::stun::message::{
        Getter, Message, MessageType, TransactionId, BINDING_REQUEST, BINDING_SUCCESS,
        CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE,
    };
    use rtc::stun::xoraddr::XorMappedAddress;
    use tokio::io::AsyncWriteExt;

    fanout_signaling::server::install_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server_tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let turn = EmbeddedTurn::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_bind: "127.0.0.1".parse().unwrap(),
        relay_announce: "127.0.0.1".parse().unwrap(),
        relay_ports: (51400, 51449),
        realm: "fanout".into(),
        secret: SECRET.into(),
        max_allocations_per_user: 2,
        allowed_peers: Vec::new(),
        hairpin: Vec::new(),
        tls: Some(("127.0.0.1:0".parse().unwrap(), Arc::new(server_tls))),
    })
    .await
    .unwrap();
    let tls_addr = turn.tls_addr().expect("a TLS listener");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client_tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(client_tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake with the server's certificate");

    // A Binding request: the answer maps our TCP address.
    let mut req = Message::new();
    req.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .unwrap();
    stream.write_all(&req.raw).await.unwrap();
    let res = timeout(Duration::from_secs(5), read_stun(&mut stream))
        .await
        .expect("a Binding answer over TLS");
    assert_eq!(res.typ, BINDING_SUCCESS);
    assert_eq!(res.transaction_id, req.transaction_id);
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&res).unwrap();
    assert_eq!(mapped.port, local.port());

    // An Allocate without credentials: the TURN server asks for them (401).
    let mut alloc = Message::new();
    alloc
        .build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        ])
        .unwrap();
    stream.write_all(&alloc.raw).await.unwrap();
    let res = timeout(Duration::from_secs(5), read_stun(&mut stream))
        .await
        .expect("an Allocate answer over TLS");
    assert_eq!(
        res.typ,
        MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)
    );
    let mut code = rtc::stun::error_code::ErrorCodeAttribute::default();
    code.get_from(&res).unwrap();
    assert_eq!(code.code.0, 401);
    turn.close().await;
}

/// An Allocate over a TURN TCP stream, authenticated the long-term way (401 first, then the
/// realm's nonce and MESSAGE-INTEGRITY): 0 on success, else the error code.
async fn allocate_over_tcp(stream: &mut tokio::net::TcpStream, user: &str, pass: &str) -> u16 {
    use rtc::stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME};
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{
        Getter, Message, MessageType, Setter, TransactionId, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
        METHOD_ALLOCATE,
    };
    use rtc::stun::textattrs::TextAttribute;
    use tokio::io::AsyncWriteExt;

    let allocate = MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST);
    let mut first = Message::new();
    first
        .build(&[Box::new(TransactionId::new()), Box::new(allocate)])
        .unwrap();
    first.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    first.write_header();
    stream.write_all(&first.raw).await.unwrap();
    let challenge = timeout(Duration::from_secs(5), read_stun(stream))
        .await
        .expect("a 401 challenge");
    let realm = TextAttribute::get_from_as(&challenge, ATTR_REALM).expect("REALM");
    let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE).expect("NONCE");
    let mut signed = Message::new();
    signed
        .build(&[
            Box::new(TransactionId::new()),
            Box::new(allocate),
            Box::new(TextAttribute::new(ATTR_USERNAME, user.into())),
            Box::new(TextAttribute::new(ATTR_REALM, realm.text.clone())),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce.text)),
        ])
        .unwrap();
    signed.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    signed.write_header();
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    MessageIntegrity::new_long_term_integrity_with_provider(
        user.into(),
        realm.text,
        pass.into(),
        provider.crypto(),
    )
    .unwrap()
    .add_to(&mut signed)
    .unwrap();
    stream.write_all(&signed.raw).await.unwrap();
    let res = timeout(Duration::from_secs(5), read_stun(stream))
        .await
        .expect("an Allocate answer");
    if res.typ == MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE) {
        return 0;
    }
    let mut code = rtc::stun::error_code::ErrorCodeAttribute::default();
    code.get_from(&res).unwrap();
    code.code.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_allocation_stops_counting_against_the_quota_when_its_connection_closes() {
    let turn = EmbeddedTurn::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_bind: "127.0.0.1".parse().unwrap(),
        relay_announce: "127.0.0.1".parse().unwrap(),
        relay_ports: (51450, 51499),
        realm: "fanout".into(),
        secret: SECRET.into(),
        max_allocations_per_user: 1,
        allowed_peers: Vec::new(),
        hairpin: Vec::new(),
        tls: None,
    })
    .await
    .unwrap();
    let server = turn.local_addr();
    let (user, pass) = turn_credentials(SECRET, "dana", unix_now() + 600);
    let connect = || tokio::net::TcpStream::connect(server);
    let mut first = connect().await.unwrap();
    assert_eq!(allocate_over_tcp(&mut first, &user, &pass).await, 0);
    let mut second = connect().await.unwrap();
    assert_eq!(
        allocate_over_tcp(&mut second, &user, &pass).await,
        486,
        "the quota (1) is full while the first connection holds its allocation"
    );
    // The client goes away without deallocating (a browser tab closed, a network lost).
    drop(first);
    let mut code = u16::MAX;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = connect().await.unwrap();
        code = allocate_over_tcp(&mut next, &user, &pass).await;
        if code == 0 {
            break;
        }
    }
    assert_eq!(code, 0, "a new allocation once the first connection closed");
    turn.close().await;
}
