//! Clients' data channels: the two negotiated channels the client library opens (reliable on
//! stream 0, lossy on stream 1), what a client sends on them and what it receives.

use std::collections::BTreeSet;

use bytes::BytesMut;
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit, RTCDataChannelMessage};
use rtc::peer_connection::event::RTCDataChannelEvent;
use sfu::api::Command;
use sfu::engine::data::{parse_delivery, write_outgoing, LOSSY_STREAM, RELIABLE_STREAM};

use super::{Client, Net};

/// A client's data channels.
pub struct ClientData {
    pub reliable: RTCDataChannelId,
    pub lossy: RTCDataChannelId,
    pub open: BTreeSet<RTCDataChannelId>,
    /// Every message it received, in order.
    pub received: Vec<DataReceived>,
}

/// A message a client received, its envelope read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataReceived {
    pub reliable: bool,
    pub text: bool,
    pub topic: String,
    pub sender_id: String,
    pub sender_identity: String,
    pub payload: Vec<u8>,
}

impl ClientData {
    pub fn is_open(&self) -> bool {
        self.open.contains(&self.reliable) && self.open.contains(&self.lossy)
    }
}

impl Net {
    /// A client creates its two negotiated data channels and offers them (a data-only offer if
    /// it publishes nothing yet).
    pub fn open_data(&mut self, client: usize) {
        let now = self.now;
        self.create_channels(client);
        let c = &mut self.clients[client];
        let offer = c.pc.create_offer(None).expect("create an offer");
        c.pc.set_local_description(now, offer.clone())
            .expect("apply the offer");
        let (driver, key) = (c.driver, c.key);
        self.command(
            driver,
            Command::Offer {
                key,
                sdp: offer.sdp,
            },
        );
    }

    /// A client creates its two negotiated channels and asks the server for its side
    /// (`enable_data`, as the web client does): the server's offer carries them.
    pub fn request_data(&mut self, client: usize) {
        self.create_channels(client);
        let (driver, key) = (self.clients[client].driver, self.clients[client].key);
        self.command(driver, Command::EnableData { key });
    }

    fn create_channels(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let reliable =
            c.pc.create_data_channel(
                "fanout-reliable",
                Some(RTCDataChannelInit {
                    negotiated: Some(RELIABLE_STREAM),
                    ..Default::default()
                }),
            )
            .expect("reliable channel")
            .id();
        let lossy =
            c.pc.create_data_channel(
                "fanout-lossy",
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    negotiated: Some(LOSSY_STREAM),
                    ..Default::default()
                }),
            )
            .expect("lossy channel")
            .id();
        c.data = Some(ClientData {
            reliable,
            lossy,
            open: BTreeSet::new(),
            received: Vec::new(),
        });
    }

    /// A client sends raw bytes on one of its channels (an envelope, or garbage).
    pub fn send_raw(&mut self, client: usize, reliable: bool, bytes: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[client];
        let data = c.data.as_ref().expect("data channels opened");
        let id = if reliable { data.reliable } else { data.lossy };
        let sent =
            c.pc.data_channel(id)
                .expect("the channel exists")
                .send(now, BytesMut::from(bytes));
        if let Err(e) = sent {
            c.errors.push(format!("data send: {e}"));
        }
    }

    /// A client sends a message to its room (`to` empty) or to the identities in `to`.
    pub fn send_message(
        &mut self,
        client: usize,
        reliable: bool,
        topic: &str,
        to: &[&str],
        payload: &[u8],
    ) {
        let envelope = write_outgoing(false, topic, to, payload);
        self.send_raw(client, reliable, &envelope);
    }
}

impl Client {
    /// The messages it received (none without data channels).
    pub fn messages(&self) -> &[DataReceived] {
        self.data.as_ref().map_or(&[], |d| &d.received)
    }
}

/// A data channel event of a client's connection.
pub(super) fn on_channel_event(c: &mut Client, ev: RTCDataChannelEvent) {
    let Some(data) = c.data.as_mut() else {
        return;
    };
    match ev {
        RTCDataChannelEvent::OnOpen(id) => {
            data.open.insert(id);
        }
        RTCDataChannelEvent::OnClose(id) => {
            data.open.remove(&id);
        }
        _ => {}
    }
}

/// A message a client's connection delivered.
pub(super) fn on_message(c: &mut Client, id: RTCDataChannelId, m: RTCDataChannelMessage) {
    let Some(data) = c.data.as_mut() else {
        c.errors.push("a data message without data channels".into());
        return;
    };
    match parse_delivery(&m.data) {
        Ok(d) => data.received.push(DataReceived {
            reliable: id == data.reliable,
            text: d.text,
            topic: d.topic.to_owned(),
            sender_id: d.sender_id.to_owned(),
            sender_identity: d.sender_identity.to_owned(),
            payload: d.payload.to_vec(),
        }),
        Err(e) => c.errors.push(format!("a delivered envelope: {e}")),
    }
}
