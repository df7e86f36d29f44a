//! MLflow's tracking API, typed: what a service needs to record its own runs.

use ctflow_core::entities::{KeyValue, Run};
use serde::Deserialize;
use serde_json::json;

use crate::ct::decode;
use crate::{ClientResult, TrackingClient};

#[derive(Deserialize)]
struct RunBody {
    run: Run,
}

/// The metrics `runs/log-batch` takes in one request (MLflow's limit).
const METRICS_PER_BATCH: usize = 1000;

/// What a new run starts with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStart {
    pub experiment_id: String,
    pub run_name: Option<String>,
    /// MLflow's deprecated `user_id`; the server records the signed-in user under auth.
    pub user_id: Option<String>,
    pub start_time: i64,
    pub tags: Vec<KeyValue>,
}

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

/// A double as MLflow's JSON writes it: NaN and the infinities as strings.
fn wire_number(value: f64) -> serde_json::Value {
    if value.is_finite() {
        json!(value)
    } else if value.is_nan() {
        json!("NaN")
    } else if value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

impl TrackingClient {
    /// The id of the experiment `name`, created when it does not exist yet.
    pub async fn experiment_id(&self, name: &str) -> ClientResult<String> {
        #[derive(Deserialize)]
        struct Experiment {
            experiment_id: String,
        }
        #[derive(Deserialize)]
        struct Found {
            experiment: Experiment,
        }
        let find = async || -> ClientResult<String> {
            let found = self
                .get(
                    "experiments/get-by-name",
                    &[("experiment_name", name.to_string())],
                )
                .await?;
            let found: Found = decode("experiments/get-by-name", found)?;
            Ok(found.experiment.experiment_id)
        };
        match find().await {
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {}
            other => return other,
        }
        match self
            .post("experiments/create", &json!({ "name": name }))
            .await
        {
            Ok(created) => {
                decode::<Experiment>("experiments/create", created).map(|e| e.experiment_id)
            }
            // Created by someone else in between.
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => find().await,
            Err(e) => Err(e),
        }
    }

    /// Starts a run with its tags.
    pub async fn create_run(&self, start: &RunStart) -> ClientResult<Run> {
        let mut body = json!({
            "experiment_id": start.experiment_id,
            "start_time": start.start_time,
            "tags": start.tags,
        });
        if let Some(name) = &start.run_name {
            body["run_name"] = json!(name);
        }
        if let Some(user) = &start.user_id {
            body["user_id"] = json!(user);
        }
        let created: RunBody = decode("runs/create", self.post("runs/create", &body).await?)?;
        Ok(created.run)
    }

    /// A run, with its data.
    pub async fn get_run(&self, run_id: &str) -> ClientResult<Run> {
        let found = self
            .get("runs/get", &[("run_id", run_id.to_string())])
            .await?;
        let found: RunBody = decode("runs/get", found)?;
        Ok(found.run)
    }

    /// Logs metric points, in as many `log-batch` requests as MLflow's limit takes.
    pub async fn log_metrics(&self, run_id: &str, metrics: &[MetricPoint]) -> ClientResult<()> {
        for chunk in metrics.chunks(METRICS_PER_BATCH) {
            let points: Vec<_> = chunk
                .iter()
                .map(|m| {
                    json!({
                        "key": m.key,
                        "value": wire_number(m.value),
                        "timestamp": m.timestamp,
                        "step": m.step,
                    })
                })
                .collect();
            self.post(
                "runs/log-batch",
                &json!({ "run_id": run_id, "metrics": points }),
            )
            .await?;
        }
        Ok(())
    }

    /// Ends a run: `FINISHED`, `FAILED` or `KILLED`.
    pub async fn end_run(&self, run_id: &str, status: &str, end_time: i64) -> ClientResult<()> {
        let body = json!({ "run_id": run_id, "status": status, "end_time": end_time });
        self.post("runs/update", &body).await.map(|_| ())
    }
}
