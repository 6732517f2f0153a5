//! `number_leases`: which worker owns which number. A lease is taken over only
//! after it expired, and every takeover bumps the fencing `epoch` that message
//! claims are checked against.

use std::time::Duration;

use uuid::Uuid;

use super::{DbError, GenericClient};
use crate::domain::NumberKind;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Which numbers a worker drives: linked ones that are not disabled, and
/// unlinked ones with a pairing under way (the worker shows their codes).
/// `n` is the number's row.
const DRIVEN: &str = "(n.state IN ('active', 'timelocked', 'banned')
                      OR (n.state = 'needs_pairing'
                          AND EXISTS (SELECT 1 FROM number_pairings p
                                       WHERE p.number_id = n.id
                                         AND p.status IN ('waiting', 'showing_code')
                                         AND p.expires_at > now())))";

/// Numbers a worker able to drive `kinds` could take now (see [`DRIVEN`])
/// without a live lease. Shuffled so that workers starting together do not
/// all race for the same rows.
pub async fn available(
    client: &impl GenericClient,
    kinds: &[NumberKind],
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT n.id
               FROM sender_numbers n
               LEFT JOIN number_leases l ON l.number_id = n.id
              WHERE n.kind = ANY($1)
                AND {DRIVEN}
                AND (l.number_id IS NULL OR l.expires_at < now())
              ORDER BY random()
              LIMIT $2"
        ))
        .await?;
    let rows = client.query(&stmt, &[&kinds, &limit]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Numbers that could be leased at all by such a worker (to size fair shares).
pub async fn leasable_count(
    client: &impl GenericClient,
    kinds: &[NumberKind],
) -> Result<i64, DbError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT count(*) FROM sender_numbers n WHERE n.kind = ANY($1) AND {DRIVEN}"
        ))
        .await?;
    Ok(client.query_one(&stmt, &[&kinds]).await?.get(0))
}

/// Takes the lease on `number_id` if it is free or expired. Returns the new
/// epoch, or `None` when another worker holds a live lease.
pub async fn acquire(
    client: &impl GenericClient,
    number_id: Uuid,
    owner: &str,
    ttl: Duration,
) -> Result<Option<i64>, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO number_leases AS l (number_id, owner, epoch, acquired_at, expires_at)
             VALUES ($1, $2, 1, now(), now() + $3::bigint * interval '1 millisecond')
             ON CONFLICT (number_id) DO UPDATE
                SET owner = EXCLUDED.owner,
                    epoch = l.epoch + 1,
                    acquired_at = EXCLUDED.acquired_at,
                    expires_at = EXCLUDED.expires_at,
                    connected = false
              WHERE l.expires_at < now()
             RETURNING epoch",
        )
        .await?;
    let row = client
        .query_opt(&stmt, &[&number_id, &owner, &millis(ttl)])
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// A renewed lease, and whether its number should still be driven (a
/// number disabled, unlinked or done pairing in the meantime should be let
/// go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    pub number_id: Uuid,
    pub still_driven: bool,
}

/// Extends the leases `owner` still holds at the given epochs. A number
/// missing from the answer was taken over.
pub async fn renew(
    client: &impl GenericClient,
    owner: &str,
    held: &[(Uuid, i64)],
    ttl: Duration,
) -> Result<Vec<Renewed>, DbError> {
    let (ids, epochs): (Vec<Uuid>, Vec<i64>) = held.iter().copied().unzip();
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE number_leases l
                SET expires_at = now() + $4::bigint * interval '1 millisecond'
               FROM unnest($2::uuid[], $3::bigint[]) AS mine (number_id, epoch),
                    sender_numbers n
              WHERE l.number_id = mine.number_id AND l.epoch = mine.epoch AND l.owner = $1
                AND n.id = l.number_id
             RETURNING l.number_id, {DRIVEN}"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&owner, &ids, &epochs, &millis(ttl)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| Renewed {
            number_id: row.get(0),
            still_driven: row.get(1),
        })
        .collect())
}

/// Gives a lease up at once (expires it) so another worker can take the number
/// without waiting for the TTL. The epoch stays: the next owner bumps it.
pub async fn release(
    client: &impl GenericClient,
    number_id: Uuid,
    owner: &str,
    epoch: i64,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE number_leases
                SET expires_at = now() - interval '1 millisecond', connected = false
              WHERE number_id = $1 AND owner = $2 AND epoch = $3",
        )
        .await?;
    Ok(client.execute(&stmt, &[&number_id, &owner, &epoch]).await? == 1)
}

/// Records whether the owner's session is connected (the scheduler only plans
/// for connected numbers). Fenced: a stale owner changes nothing.
pub async fn set_connected(
    client: &impl GenericClient,
    number_id: Uuid,
    owner: &str,
    epoch: i64,
    connected: bool,
) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE number_leases SET connected = $4
              WHERE number_id = $1 AND owner = $2 AND epoch = $3",
        )
        .await?;
    Ok(client
        .execute(&stmt, &[&number_id, &owner, &epoch, &connected])
        .await?
        == 1)
}

/// Which of `number_ids` have a live lease with a connected session.
pub async fn connected_among(
    client: &impl GenericClient,
    number_ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT number_id FROM number_leases
              WHERE number_id = ANY($1) AND connected AND expires_at > now()",
        )
        .await?;
    let rows = client.query(&stmt, &[&number_ids]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Whether some worker holds a live lease on the number now.
pub async fn held(client: &impl GenericClient, number_id: Uuid) -> Result<bool, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM number_leases WHERE number_id = $1 AND expires_at > now())",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&number_id]).await?.get(0))
}
