//! Ground-truth labels for served predictions. Sending a label twice changes nothing;
//! sending another label for the same row replaces the first (a corrected label).

use ctflow_core::MlflowError;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::Store;
use crate::error::Result;

/// One label as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLabel {
    /// The request id the serving log recorded (or the client sent).
    pub request_id: String,
    /// The row's place in its request (0 for single-row requests).
    pub row: u32,
    /// The true outcome: a JSON number, bool or string.
    pub label: Value,
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredLabel {
    /// Arrival order; readers page by it.
    pub seq: i64,
    /// The request id.
    pub request_id: String,
    /// The row of the request.
    pub row: u32,
    /// The label.
    pub label: Value,
    /// When it (or its latest replacement) arrived, epoch ms.
    pub received_time: i64,
}

/// What a batch of labels did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeedbackOutcome {
    /// Labels for rows that had none.
    pub stored: u64,
    /// Labels equal to the one already stored (a resend).
    pub unchanged: u64,
    /// Labels that replaced a different one.
    pub replaced: u64,
}

impl Store {
    /// Stores labels for a registered model's predictions, in one transaction.
    pub async fn put_feedback(
        &self,
        model: &str,
        labels: &[NewLabel],
        received_time: i64,
    ) -> Result<FeedbackOutcome> {
        self.require_registered_model(model).await?;
        let mut outcome = FeedbackOutcome::default();
        let mut tx = self.begin_write().await?;
        for label in labels {
            let text = serde_json::to_string(&label.label)
                .map_err(|e| MlflowError::invalid(format!("Invalid label: {e}")))?;
            let inserted = sqlx::query(
                "INSERT INTO feedback_labels (name, request_id, row_index, label, received_time) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, request_id, row_index) DO NOTHING",
            )
            .bind(model)
            .bind(label.request_id.as_str())
            .bind(i64::from(label.row))
            .bind(text.as_str())
            .bind(received_time)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() > 0 {
                outcome.stored += 1;
                continue;
            }
            let replaced = sqlx::query(
                "UPDATE feedback_labels SET label = $1, received_time = $2 \
                 WHERE name = $3 AND request_id = $4 AND row_index = $5 AND label <> $1",
            )
            .bind(text.as_str())
            .bind(received_time)
            .bind(model)
            .bind(label.request_id.as_str())
            .bind(i64::from(label.row))
            .execute(&mut *tx)
            .await?;
            if replaced.rows_affected() > 0 {
                outcome.replaced += 1;
            } else {
                outcome.unchanged += 1;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// A model's labels that arrived at or after `received_after` (epoch ms), in arrival
    /// order after `after_seq`, at most `max`.
    pub async fn list_feedback(
        &self,
        model: &str,
        received_after: i64,
        after_seq: i64,
        max: usize,
    ) -> Result<Vec<StoredLabel>> {
        self.require_registered_model(model).await?;
        let rows = sqlx::query(
            "SELECT seq, request_id, row_index, label, received_time FROM feedback_labels \
             WHERE name = $1 AND received_time >= $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(model)
        .bind(received_after)
        .bind(after_seq)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        let mut labels = Vec::with_capacity(rows.len());
        for row in rows {
            let text: String = row.try_get("label")?;
            let row_index: i64 = row.try_get("row_index")?;
            labels.push(StoredLabel {
                seq: row.try_get("seq")?,
                request_id: row.try_get("request_id")?,
                row: u32::try_from(row_index).unwrap_or(u32::MAX),
                // Written by put_feedback as JSON; anything else would be a foreign write.
                label: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                received_time: row.try_get("received_time")?,
            });
        }
        Ok(labels)
    }
}
