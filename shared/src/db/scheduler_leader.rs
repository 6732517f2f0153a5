//! `scheduler_leader`: which scheduler process acts. A lease like a number's:
//! taken over only after it expired, with a fencing epoch.

use std::time::Duration;

use super::{DbError, GenericClient};

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Takes or renews leadership. Returns the epoch held, or `None` while
/// another scheduler leads.
pub async fn claim(
    client: &impl GenericClient,
    owner: &str,
    ttl: Duration,
) -> Result<Option<i64>, DbError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO scheduler_leader AS l (singleton, owner, epoch, expires_at)
             VALUES (true, $1, 1, now() + $2::bigint * interval '1 millisecond')
             ON CONFLICT (singleton) DO UPDATE
                SET owner = EXCLUDED.owner,
                    epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE l.epoch + 1 END,
                    expires_at = EXCLUDED.expires_at
              WHERE l.owner = EXCLUDED.owner OR l.expires_at < now()
             RETURNING epoch",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&owner, &millis(ttl)])
        .await?
        .map(|row| row.get(0)))
}

/// Steps down (at shutdown), so a standby takes over at once.
pub async fn resign(client: &impl GenericClient, owner: &str) -> Result<(), DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE scheduler_leader SET expires_at = now() - interval '1 millisecond'
              WHERE owner = $1",
        )
        .await?;
    client.execute(&stmt, &[&owner]).await?;
    Ok(())
}
