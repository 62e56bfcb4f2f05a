//! Data messages through the driver on a virtual clock (see `harness`): real `rtc` clients with
//! the two negotiated channels the client library opens; what each receiver reads.

mod harness;

use std::time::Duration;

use harness::{DataReceived, Net};
use sfu::api::Command;
use sfu::{DataMessage, ErrorKind, Event, JoinRequest, Permissions, SfuConfig};

/// `names` join `room` on driver 0 (or on drivers alternately with `drivers` > 1), open their
/// data channels, and connect.
fn data_room(net: &mut Net, names: &[&str]) -> Vec<usize> {
    let drivers = net.nodes.len();
    let clients: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| net.join(i % drivers, n, "room"))
        .collect();
    for &c in &clients {
        net.open_data(c);
    }
    let all = clients.clone();
    net.run_until(Duration::from_secs(3), "data channels open", move |n| {
        all.iter()
            .all(|&c| n.clients[c].data.as_ref().is_some_and(|d| d.is_open()))
    });
    clients
}

#[test]
fn the_server_offers_the_data_channels_a_client_asks_for() {
    let mut net = Net::new(1);
    // Bob publishes (the server has offers of its own to make); alice and carol ask for data
    // (`enable_data`) instead of offering it.
    let bob = net.join(0, "bob", "room");
    net.publish_video(bob, &[("", 1111)]);
    let clients = [net.join(0, "alice", "room"), net.join(0, "carol", "room")];
    for &c in &clients {
        net.request_data(c);
    }
    net.run_until(Duration::from_secs(3), "data channels open", move |n| {
        clients
            .iter()
            .all(|&c| n.clients[c].data.as_ref().is_some_and(|d| d.is_open()))
    });
    let (a, carol) = (clients[0], clients[1]);
    net.send_message(a, true, "chat", &[], b"hello");
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        payloads(net.clients[carol].messages()),
        vec![b"hello".to_vec()]
    );
    // Asking again changes nothing.
    let (driver, key) = (net.clients[a].driver, net.clients[a].key);
    net.command(driver, Command::EnableData { key });
    net.run_for(Duration::from_millis(500));
    assert!(net.clients[a].data.as_ref().is_some_and(|d| d.is_open()));
    no_client_errors(&net);
}

#[test]
fn a_whip_or_whep_session_has_no_data_channel() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["alice", "bob"]);
    // An answer-only (WHIP) client that offers data channels anyway, and asks for them.
    let whip = net.join_with(
        0,
        JoinRequest {
            room: "room".into(),
            identity: "obs".into(),
            name: "obs".into(),
            permissions: Permissions::default(),
            subscribe_to: None,
            answer_only: true,
            mixed_audio: false,
            mixed_video: false,
        },
    );
    net.open_data(whip);
    let (driver, key) = (net.clients[whip].driver, net.clients[whip].key);
    net.command(driver, Command::EnableData { key });
    net.run_for(Duration::from_secs(2));
    assert!(
        !net.clients[whip]
            .events
            .iter()
            .any(|e| matches!(e, Event::Offer(_))),
        "the server never offers an answer-only client"
    );
    // Whatever it manages to send reaches nobody, and the room's messages do not reach it.
    if net.clients[whip].data.as_ref().is_some_and(|d| d.is_open()) {
        net.send_message(whip, true, "chat", &[], b"from whip");
    }
    net.send_message(c[0], true, "chat", &[], b"from alice");
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        payloads(net.clients[c[1]].messages()),
        vec![b"from alice".to_vec()]
    );
    assert!(net.clients[whip].messages().is_empty());
}

fn payloads(got: &[DataReceived]) -> Vec<Vec<u8>> {
    got.iter().map(|m| m.payload.clone()).collect()
}

fn errors(net: &Net, c: usize) -> Vec<(ErrorKind, String)> {
    net.clients[c]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Error { kind, message } => Some((*kind, message.clone())),
            _ => None,
        })
        .collect()
}

fn no_client_errors(net: &Net) {
    for c in &net.clients {
        assert!(c.errors.is_empty(), "{}: {:?}", c.name, c.errors);
    }
}

#[test]
fn reliable_messages_reach_the_room_complete_in_order_and_stamped() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["alice", "bob", "carol"]);
    let (a, b, carol) = (c[0], c[1], c[2]);
    let sent: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    for p in &sent {
        net.send_message(a, true, "chat", &[], p);
        net.run_for(Duration::from_millis(1));
    }
    // The largest envelope (64 KiB: 8 bytes of head for topic "file"); delivered with the
    // sender's stamp it is larger than that.
    let big: Vec<u8> = (0..64 * 1024 - 8).map(|i| (i % 251) as u8).collect();
    net.send_message(a, true, "file", &[], &big);
    net.run_for(Duration::from_secs(2));
    let alice_id = net.clients[a].join_info.participant_id.clone();
    for r in [b, carol] {
        let got = net.clients[r].messages();
        assert_eq!(got.len(), 1001, "{}", net.clients[r].name);
        assert_eq!(payloads(&got[..1000]), sent, "complete and in order");
        assert!(got[..1000]
            .iter()
            .all(|m| m.reliable && m.topic == "chat" && !m.text));
        assert_eq!(got[1000].payload, big, "one 64 KiB message whole");
        assert_eq!(got[1000].topic, "file");
        assert!(got
            .iter()
            .all(|m| m.sender_id == alice_id && m.sender_identity == "alice"));
    }
    assert!(
        net.clients[a].messages().is_empty(),
        "not back to the sender"
    );
    let stats = net.stats(0);
    assert_eq!(stats.data_messages_in, 1001);
    assert_eq!(stats.data_messages_relayed, 2002);
    assert_eq!(stats.data_dropped, Default::default());
    no_client_errors(&net);
}

#[test]
fn a_message_to_an_identity_reaches_only_it() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["alice", "bob", "carol"]);
    net.send_message(c[0], true, "dm", &["carol"], b"for carol");
    net.send_message(c[0], false, "dm", &["bob", "nobody"], b"for bob");
    net.run_for(Duration::from_millis(200));
    assert_eq!(
        payloads(net.clients[c[2]].messages()),
        [b"for carol".to_vec()]
    );
    let bob = net.clients[c[1]].messages();
    assert_eq!(payloads(bob), [b"for bob".to_vec()]);
    assert!(!bob[0].reliable, "on the lossy channel");
    assert!(net.clients[c[0]].messages().is_empty());
}

#[test]
fn the_sender_cannot_forge_who_it_is() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["mallory", "bob"]);
    // An envelope in the server's format (sender fields) is read as a client's: its "sender"
    // bytes become the topic and destination list, never the stamp.
    let forged = sfu::engine::data::write_delivery(false, "t", "PA_bob", "bob", b"hi");
    net.send_raw(c[0], true, &forged);
    net.send_message(c[0], true, "t", &[], b"plain");
    net.run_for(Duration::from_millis(200));
    let mallory = net.clients[c[0]].join_info.participant_id.clone();
    let got = net.clients[c[1]].messages();
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|m| m.sender_id == mallory && m.sender_identity == "mallory"));
}

#[test]
fn lossy_messages_are_never_mixed_into_the_reliable_stream() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["alice", "bob"]);
    // Half the datagrams to bob are lost for a while: lossy messages may vanish, reliable ones
    // are retransmitted and stay in order.
    let (bob, mut n) = (c[1], 0u32);
    net.drop_down = Some(Box::new(move |d| {
        n += 1;
        d.client == bob && n.is_multiple_of(2)
    }));
    for i in 0..200u32 {
        net.send_message(c[0], true, "r", &[], &i.to_be_bytes());
        net.send_message(c[0], false, "l", &[], &i.to_be_bytes());
        net.run_for(Duration::from_millis(5));
    }
    net.drop_down = None;
    net.run_for(Duration::from_secs(5));
    let got = net.clients[c[1]].messages();
    let reliable: Vec<&DataReceived> = got.iter().filter(|m| m.reliable).collect();
    let lossy: Vec<&DataReceived> = got.iter().filter(|m| !m.reliable).collect();
    let expected: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(
        reliable
            .iter()
            .map(|m| m.payload.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(reliable.iter().all(|m| m.topic == "r"));
    assert!(lossy.iter().all(|m| m.topic == "l"));
    assert!(lossy.len() < 200, "some lossy messages were lost");
    no_client_errors(&net);
}

#[test]
fn each_limit_refuses_with_a_clear_error_and_a_counted_drop() {
    let mut config = SfuConfig::default();
    config.data.messages_per_sec = 20;
    let mut net = Net::with_config(1, config);
    let quiet = net.join_as(
        0,
        "quiet",
        "room",
        Permissions {
            data: false,
            ..Permissions::default()
        },
    );
    let c = data_room(&mut net, &["alice", "bob"]);
    net.open_data(quiet);
    net.run_until(Duration::from_secs(3), "open", move |n| {
        n.clients[quiet].data.as_ref().is_some_and(|d| d.is_open())
    });
    let (a, b) = (c[0], c[1]);

    // Too large for the lossy channel (1,200 bytes by default).
    net.send_message(a, false, "t", &[], &[0; 1300]);
    net.run_for(Duration::from_millis(1100));
    // Not an envelope.
    net.send_raw(a, true, &[7, 7, 7]);
    net.run_for(Duration::from_millis(1100));
    // No data grant.
    net.send_message(quiet, true, "t", &[], b"let me speak");
    net.run_for(Duration::from_millis(1100));
    // Over the rate: 20 per second.
    for i in 0..40u8 {
        net.send_message(a, true, "t", &[], &[i]);
    }
    net.run_for(Duration::from_millis(300));

    let errs = errors(&net, a);
    assert!(
        errs.iter().any(|(k, m)| *k == ErrorKind::DataRejected
            && m.contains("exceeds the lossy channel's limit of 1200 bytes")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|(k, m)| *k == ErrorKind::DataRejected
                && m.contains("unknown data envelope version 7")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|(k, _)| *k == ErrorKind::DataRateLimited),
        "{errs:?}"
    );
    assert!(
        errors(&net, quiet)
            .iter()
            .any(|(k, m)| *k == ErrorKind::DataRejected && m.contains("may not send data")),
        "{:?}",
        errors(&net, quiet)
    );
    let got = net.clients[b].messages();
    assert_eq!(
        got.len(),
        20,
        "the rate's burst passes, the rest is dropped"
    );
    let stats = net.stats(0);
    assert_eq!(
        (
            stats.data_dropped.too_large,
            stats.data_dropped.invalid,
            stats.data_dropped.denied,
            stats.data_dropped.rate_limited
        ),
        (1, 1, 1, 20)
    );
    // Nobody else was disturbed: bob still gets messages.
    net.run_for(Duration::from_secs(2));
    net.send_message(a, true, "t", &[], b"later");
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.clients[b].messages().last().unwrap().payload, b"later");
}

#[test]
fn a_receiver_that_does_not_read_is_dropped_for_lossy_and_disconnected_for_reliable() {
    let mut config = SfuConfig::default();
    config.data.messages_per_sec = 0;
    config.data.bytes_per_sec = 0;
    config.data.reliable_backlog = 256 * 1024;
    let mut net = Net::with_config(1, config);
    let c = data_room(&mut net, &["alice", "bob", "sleepy"]);
    // sleepy stops acknowledging anything: its backlog grows.
    net.clients[c[2]].silent = true;
    let chunk = vec![1u8; 60 * 1024];
    for _ in 0..8 {
        net.send_message(c[0], true, "t", &[], &chunk);
        net.run_for(Duration::from_millis(50));
    }
    net.run_for(Duration::from_millis(200));
    for _ in 0..100 {
        net.send_message(c[0], false, "t", &[], &[2; 1000]);
    }
    net.run_for(Duration::from_millis(200));
    let stats = net.stats(0);
    assert_eq!(stats.data_backlog_disconnects, 1, "{stats:?}");
    assert_eq!(stats.participants, 2);
    assert!(net.clients[c[2]]
        .saw(|e| matches!(e, Event::Closed { reason } if reason.contains("backlog"))));
    // bob kept reading throughout.
    let bob = net.clients[c[1]].messages();
    assert_eq!(bob.iter().filter(|m| m.reliable).count(), 8);
}

#[test]
fn messages_cross_to_room_members_on_another_driver() {
    let mut net = Net::new(2);
    let c = data_room(&mut net, &["alice", "bob", "carol", "dave"]);
    // alice and carol on driver 0, bob and dave on driver 1.
    net.send_message(c[0], true, "all", &[], b"to everyone");
    net.send_message(c[0], true, "one", &["dave"], b"to dave");
    net.run_for(Duration::from_millis(200));
    let alice_id = net.clients[c[0]].join_info.participant_id.clone();
    for r in [c[1], c[2]] {
        assert_eq!(
            payloads(net.clients[r].messages()),
            [b"to everyone".to_vec()]
        );
    }
    let dave = net.clients[c[3]].messages();
    assert_eq!(
        payloads(dave),
        [b"to everyone".to_vec(), b"to dave".to_vec()]
    );
    assert!(dave.iter().all(|m| m.sender_id == alice_id));
    no_client_errors(&net);
}

#[test]
fn the_server_sends_into_a_room() {
    let mut net = Net::new(1);
    let c = data_room(&mut net, &["alice", "bob"]);
    let (reply, mut rx) = tokio::sync::oneshot::channel();
    net.command(
        0,
        Command::SendData {
            room: "room".into(),
            message: DataMessage {
                reliable: true,
                text: true,
                topic: "notice".into(),
                to: vec!["bob".into()],
                payload: "the room closes soon".into(),
            },
            reply,
        },
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(rx.try_recv().unwrap(), 1);
    let got = net.clients[c[1]].messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].text,
            got[0].sender_id.as_str(),
            got[0].payload.as_slice()
        ),
        (true, "", &b"the room closes soon"[..])
    );
    assert!(net.clients[c[0]].messages().is_empty());
}
