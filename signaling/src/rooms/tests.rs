//! Unit tests of the room registry (joins, limits, timeouts on paused time).

use super::*;

fn rooms(policy: RoomPolicy) -> (Rooms, mpsc::UnboundedReceiver<HookEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Rooms::new(policy, Some(tx)), rx)
}

fn kinds(rx: &mut mpsc::UnboundedReceiver<HookEvent>) -> Vec<EventKind> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e.event);
    }
    v
}

#[tokio::test(start_paused = true)]
async fn limits_and_lifecycle() {
    let (rooms, mut hooks) = rooms(RoomPolicy {
        max_rooms: 1,
        max_participants: 2,
        ..RoomPolicy::default()
    });
    let a = rooms.reserve("r").unwrap();
    let b = rooms.reserve("r").unwrap();
    assert_eq!(
        rooms.reserve("r").err(),
        Some(Refusal::RoomFull {
            room: "r".into(),
            max: 2
        })
    );
    assert_eq!(rooms.reserve("other").err(), Some(Refusal::TooManyRooms(1)));
    drop(b); // a failed join gives its place back
    let (k1, mut kick1) = mpsc::unbounded_channel();
    rooms.admit(a, "PA_1", "alice", "Alice", k1);
    let c = rooms.reserve("r").unwrap();
    let (k2, _kick2) = mpsc::unbounded_channel();
    rooms.admit(c, "PA_2", "alice", "Alice again", k2);
    assert_eq!(kick1.try_recv().ok(), Some(Kick::DuplicateIdentity));
    rooms.leave("r", "PA_1");
    rooms.leave("r", "PA_2");
    assert!(rooms.exists("r"), "kept for the departure timeout");
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(!rooms.exists("r"));
    assert_eq!(
        kinds(&mut hooks),
        vec![
            EventKind::RoomStarted,
            EventKind::ParticipantJoined,
            EventKind::ParticipantJoined,
            EventKind::ParticipantLeft,
            EventKind::ParticipantLeft,
            EventKind::RoomFinished,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn created_rooms_wait_for_their_first_participant_then_go() {
    let (rooms, _hooks) = rooms(RoomPolicy {
        auto_create: false,
        ..RoomPolicy::default()
    });
    assert_eq!(
        rooms.reserve("x").err(),
        Some(Refusal::RoomNotFound("x".into()))
    );
    let opts = RoomOptions {
        max_participants: Some(1),
        empty_timeout: Some(Duration::from_secs(60)),
        mode: None,
    };
    assert_eq!(rooms.create("x", opts.clone()), Ok(true));
    assert_eq!(rooms.create("x", opts), Ok(false));
    let r = rooms.reserve("x").unwrap();
    assert!(matches!(
        rooms.reserve("x"),
        Err(Refusal::RoomFull { max: 1, .. })
    ));
    drop(r);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        rooms.exists("x"),
        "a released reservation does not shorten the wait much"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(!rooms.exists("x"));
}

#[tokio::test]
async fn delete_and_remove_kick_sessions() {
    let (rooms, _hooks) = rooms(RoomPolicy::default());
    let (k1, mut kick1) = mpsc::unbounded_channel();
    rooms.admit(rooms.reserve("r").unwrap(), "PA_1", "alice", "A", k1);
    let (k2, mut kick2) = mpsc::unbounded_channel();
    rooms.admit(rooms.reserve("r").unwrap(), "PA_2", "bob", "B", k2);
    assert!(rooms.remove_participant("r", "bob"));
    assert!(!rooms.remove_participant("r", "carol"));
    assert_eq!(kick2.try_recv().ok(), Some(Kick::Removed));
    assert!(rooms.delete("r"));
    assert!(!rooms.delete("r"));
    assert_eq!(kick1.try_recv().ok(), Some(Kick::RoomDeleted));
}

#[tokio::test]
async fn a_deleted_room_reports_its_participants_leaving_before_it_finishes() {
    let (rooms, mut hooks) = rooms(RoomPolicy::default());
    let (k, _kick) = mpsc::unbounded_channel();
    rooms.admit(rooms.reserve("r").unwrap(), "PA_1", "alice", "A", k);
    rooms.delete("r");
    // The session's leave comes after the room is gone: nothing more is reported.
    rooms.leave("r", "PA_1");
    assert_eq!(
        kinds(&mut hooks),
        vec![
            EventKind::RoomStarted,
            EventKind::ParticipantJoined,
            EventKind::ParticipantLeft,
            EventKind::RoomFinished,
        ]
    );
}
