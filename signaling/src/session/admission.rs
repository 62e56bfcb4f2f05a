//! Who may join: the checks every join goes through (draining, room and name, token, the room
//! registry's limits), and, on a cluster, where a join is routed before any of them reserves a
//! place.

use rand::distr::{Alphanumeric, SampleString};
use sfu::{Permissions, TrackSource};
use tracing::info;

use super::{Origin, SessionContext};
use crate::protocol::{ErrorCode, RoomMode, MAX_NAME_CHARS, MAX_ROOM_CHARS};
use crate::rooms::Refusal;

/// Who the participant is and what it may do: from its token, or (in `--dev`, without one)
/// a fresh identity with every permission.
pub(crate) fn admission(
    ctx: &SessionContext,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> Result<(String, String, Permissions), (ErrorCode, String)> {
    if token.is_none() && ctx.dev {
        let identity = format!("dev-{}", Alphanumeric.sample_string(&mut rand::rng(), 8));
        return Ok((identity, name.to_owned(), Permissions::default()));
    }
    let claims = ctx
        .auth
        .verify_join(token, room)
        .map_err(|e| (ErrorCode::from(e), e.to_string()))?;
    let name = claims
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name.to_owned());
    let sources = match &claims.grants.sources {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|s| {
                    TrackSource::parse(s).ok_or_else(|| {
                        (
                            ErrorCode::TokenMalformed,
                            format!("the token's grants name an unknown source {s:?}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok((
        claims.sub,
        name,
        Permissions {
            publish: claims.grants.publish,
            subscribe: claims.grants.subscribe,
            sources,
            data: claims.grants.data,
        },
    ))
}

/// A join that passed every check, holding its place in the room.
pub(crate) struct Admitted {
    pub reservation: crate::rooms::Reservation,
    pub identity: String,
    pub name: String,
    pub permissions: Permissions,
}

/// The checks every join goes through, whatever its transport (WebSocket, WHIP, WHEP): the
/// server is not draining, room and name are valid, the token (unless `--dev` and none is
/// given), then the room registry's limits and the room's `mode`, if one is asked for.
pub(crate) fn admit(
    ctx: &SessionContext,
    room: &str,
    name: &str,
    token: Option<&str>,
    mode: Option<RoomMode>,
) -> Result<Admitted, (ErrorCode, String)> {
    // A draining node of a cluster still takes joins for the rooms it holds: they finish here.
    if ctx.drain.is_draining() && !(ctx.cluster.is_some() && ctx.rooms.exists(room)) {
        return Err(draining());
    }
    check_room_name(room)?;
    let (identity, name, permissions) = admission(ctx, room, name, token)?;
    let name_len = name.chars().count();
    if name_len == 0 || name_len > MAX_NAME_CHARS {
        return Err((
            ErrorCode::InvalidMessage,
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if identity.is_empty() || identity.chars().count() > MAX_NAME_CHARS {
        return Err((
            ErrorCode::TokenMalformed,
            format!("the token's identity must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let reservation = ctx.rooms.reserve_mode(room, mode).map_err(|refusal| {
        let code = match refusal {
            Refusal::RoomNotFound(_) => ErrorCode::RoomNotFound,
            Refusal::RoomFull { .. } => ErrorCode::RoomFull,
            Refusal::TooManyRooms(_) => ErrorCode::TooManyRooms,
            Refusal::ModeMismatch { .. } => ErrorCode::RoomModeMismatch,
        };
        (code, refusal.to_string())
    })?;
    Ok(Admitted {
        reservation,
        identity,
        name,
        permissions,
    })
}

/// A room name of 1 to [`MAX_ROOM_CHARS`] characters.
fn check_room_name(room: &str) -> Result<(), (ErrorCode, String)> {
    let len = room.chars().count();
    if len == 0 || len > MAX_ROOM_CHARS {
        return Err((
            ErrorCode::InvalidMessage,
            format!("room must be 1 to {MAX_ROOM_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Multi-node: where a join for `room` goes (`None`: here). A draining node takes joins only
/// for the rooms it holds; the others are sent back to the load balancer.
pub(super) async fn route(
    ctx: &SessionContext,
    cluster: &crate::cluster::Cluster,
    origin: Origin,
    room: &str,
    name: &str,
    token: Option<&str>,
) -> Result<Option<crate::proxy::Upstream>, (ErrorCode, String)> {
    if ctx.drain.is_draining() && !ctx.rooms.exists(room) {
        return Err(draining());
    }
    // Refused here what the room's node would refuse anyway (any node verifies tokens): a bad
    // join places no room and opens no proxy.
    check_room_name(room)?;
    admission(ctx, room, name, token)?;
    crate::proxy::open(cluster, room, origin == Origin::Node)
        .await
        .map_err(|e| {
            info!(room, %e, "join not routed");
            (ErrorCode::ClusterUnavailable, e.to_string())
        })
}

pub(super) fn draining() -> (ErrorCode, String) {
    (
        ErrorCode::ServerDraining,
        "this server is draining and takes no new participants; join again (through the load \
         balancer) to reach another server"
            .into(),
    )
}
