//! The start of every pass: what time alone changes.

use chrono::{DateTime, Utc};
use herald_shared::{
    db::{self, DbError},
    domain::NumberState,
    events::{Event, EventBody, NumberChange},
    outbox,
};

use crate::planner::{PlanError, Planner};

impl Planner {
    pub(crate) async fn housekeeping(&self, now: DateTime<Utc>) -> Result<(), PlanError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;

        // Time-locks and bans that ended.
        let tx = client.transaction().await.map_err(DbError::from)?;
        for (number_id, tenant_id, was) in db::sender_numbers::lift_expired(&tx, now).await? {
            tracing::info!(%number_id, ?was, "number restored");
            let body = EventBody::NumberRestored(NumberChange {
                number_id,
                state: NumberState::Active,
                until: None,
                reason: Some(format!(
                    "{} ended",
                    match was {
                        NumberState::Banned => "ban",
                        _ => "reach-out time-lock",
                    }
                )),
            });
            outbox::enqueue(&tx, &Event::new(tenant_id, body)).await?;
        }
        tx.commit().await.map_err(DbError::from)?;

        // Retries whose back-off is over.
        db::messages::release_due_retries(&client, now).await?;

        // Scheduled campaigns whose time came.
        let tx = client.transaction().await.map_err(DbError::from)?;
        for (campaign_id, tenant_id) in db::campaigns::start_due(&tx, now).await? {
            tracing::info!(%campaign_id, "scheduled campaign started");
            let body = EventBody::CampaignStarted(EventBody::campaign(campaign_id, None));
            outbox::enqueue(&tx, &Event::new(tenant_id, body)).await?;
        }
        tx.commit().await.map_err(DbError::from)?;

        // Campaigns past their end: what is not sent by now will not be.
        for campaign_id in db::campaigns::end_overdue(&client, now).await? {
            tracing::info!(%campaign_id, "campaign reached end_by: unsent messages cancelled");
        }
        Ok(())
    }
}
