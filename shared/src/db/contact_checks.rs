//! `contact_status`, `contact_checks` and `contact_lookups`: whether phones use
//! WhatsApp. Checks are answered from a cache when fresh; the rest become
//! lookups that the worker owning the chosen number works through slowly
//! (bulk lookups get numbers banned).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, GenericClient};

#[derive(Debug, Clone)]
pub struct Known {
    pub phone: String,
    pub on_whatsapp: bool,
    pub checked_at: DateTime<Utc>,
}

/// Cached answers for `phones` younger than `max_age_days`.
pub async fn cached(
    client: &impl GenericClient,
    tenant_id: Uuid,
    phones: &[String],
    max_age_days: i32,
) -> Result<Vec<Known>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT phone, on_whatsapp, checked_at FROM contact_status
              WHERE tenant_id = $1 AND phone = ANY($2)
                AND checked_at > now() - $3::int * interval '1 day'",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&tenant_id, &phones, &max_age_days])
        .await?;
    Ok(rows
        .iter()
        .map(|r| Known {
            phone: r.get(0),
            on_whatsapp: r.get(1),
            checked_at: r.get(2),
        })
        .collect())
}

/// Records a check of `phones` through `number_id`, with a lookup for each of
/// `to_look_up` (the others were answered from the cache).
pub async fn create(
    client: &impl GenericClient,
    tenant_id: Uuid,
    number_id: Uuid,
    phones: &[String],
    to_look_up: &[String],
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let check = client
        .prepare_cached(
            "INSERT INTO contact_checks (id, tenant_id, number_id, phones) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    client
        .execute(&check, &[&id, &tenant_id, &number_id, &phones])
        .await?;
    let lookups = client
        .prepare_cached(
            "INSERT INTO contact_lookups (check_id, tenant_id, number_id, phone)
             SELECT $1, $2, $3, unnest($4::text[])",
        )
        .await?;
    client
        .execute(&lookups, &[&id, &tenant_id, &number_id, &to_look_up])
        .await?;
    Ok(id)
}

/// A check's phones, and what is known of each now (`None` while its lookup
/// is still waiting).
pub async fn results(
    client: &impl GenericClient,
    tenant_id: Uuid,
    check_id: Uuid,
) -> Result<Option<Vec<(String, Option<Known>)>>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT p.phone, s.on_whatsapp, s.checked_at,
                    EXISTS (SELECT 1 FROM contact_lookups l
                             WHERE l.check_id = c.id AND l.phone = p.phone AND l.done_at IS NULL)
               FROM contact_checks c
               CROSS JOIN LATERAL unnest(c.phones) WITH ORDINALITY AS p (phone, ord)
               LEFT JOIN contact_status s ON s.tenant_id = c.tenant_id AND s.phone = p.phone
              WHERE c.tenant_id = $1 AND c.id = $2
              ORDER BY p.ord",
        )
        .await?;
    let rows = client.query(&stmt, &[&tenant_id, &check_id]).await?;
    if rows.is_empty() {
        let exists = client
            .prepare_cached("SELECT 1 FROM contact_checks WHERE tenant_id = $1 AND id = $2")
            .await?;
        if client
            .query_opt(&exists, &[&tenant_id, &check_id])
            .await?
            .is_none()
        {
            return Ok(None);
        }
    }
    Ok(Some(
        rows.iter()
            .map(|r| {
                let phone: String = r.get(0);
                let waiting: bool = r.get(3);
                let known = r
                    .get::<_, Option<bool>>(1)
                    .filter(|_| !waiting)
                    .map(|on| Known {
                        phone: phone.clone(),
                        on_whatsapp: on,
                        checked_at: r.get(2),
                    });
                (phone, known)
            })
            .collect(),
    ))
}

/// A pending lookup, claimed by the worker of its number.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub id: i64,
    pub tenant_id: Uuid,
    pub phone: String,
}

/// Claims up to `limit` pending lookups of a number (locked until the
/// transaction ends).
pub async fn claim_pending(
    client: &impl GenericClient,
    number_id: Uuid,
    limit: i64,
) -> Result<Vec<Lookup>, DbError> {
    let stmt = client
        .prepare_cached(
            "SELECT id, tenant_id, phone FROM contact_lookups
              WHERE number_id = $1 AND done_at IS NULL
              ORDER BY id LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let rows = client.query(&stmt, &[&number_id, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| Lookup {
            id: r.get(0),
            tenant_id: r.get(1),
            phone: r.get(2),
        })
        .collect())
}

/// Records lookup answers: the cache and the lookups themselves.
pub async fn record(
    client: &impl GenericClient,
    answers: &[(&Lookup, bool)],
) -> Result<(), DbError> {
    let status = client
        .prepare_cached(
            "INSERT INTO contact_status (tenant_id, phone, on_whatsapp, checked_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (tenant_id, phone) DO UPDATE
                SET on_whatsapp = EXCLUDED.on_whatsapp, checked_at = EXCLUDED.checked_at",
        )
        .await?;
    let done = client
        .prepare_cached("UPDATE contact_lookups SET done_at = now() WHERE id = $1")
        .await?;
    for (lookup, on) in answers {
        client
            .execute(&status, &[&lookup.tenant_id, &lookup.phone, on])
            .await?;
        client.execute(&done, &[&lookup.id]).await?;
    }
    Ok(())
}
