//! ctflow's CT API (`/api/ctflow/v1`), typed: what the watcher records and reads.

use std::collections::BTreeSet;

use ctflow_core::data::DataSnapshot;
use ctflow_core::pipeline::PipelineRecord;
use ctflow_core::pipeline_run::{PipelineRun, PipelineRunEvent};
use ctflow_core::trigger::DriftEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ClientError, ClientResult, TrackingClient};

/// What recording a trigger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new pipeline run, with its id.
    Created(String),
    /// The same event was recorded before: the id of the run it started.
    Duplicate(String),
}

#[derive(Deserialize)]
struct RecordedBody {
    pipeline_run: Option<RunRef>,
    #[serde(default)]
    duplicate: bool,
}

#[derive(Deserialize)]
struct RunRef {
    id: String,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(path: &str, value: Value) -> ClientResult<T> {
    serde_json::from_value(value).map_err(|e| ClientError::Decode {
        endpoint: path.to_string(),
        message: e.to_string(),
    })
}

fn recorded(path: &str, value: Value) -> ClientResult<Option<Recorded>> {
    let body: RecordedBody = decode(path, value)?;
    Ok(body.pipeline_run.map(|run| {
        if body.duplicate {
            Recorded::Duplicate(run.id)
        } else {
            Recorded::Created(run.id)
        }
    }))
}

impl Recorded {
    /// What a trigger endpoint's answer (`{"pipeline_run": ..., "duplicate": ...}`) says.
    pub fn from_answer(answer: &Value) -> ClientResult<Recorded> {
        let endpoint = "trigger";
        recorded(endpoint, answer.clone())?.ok_or_else(|| ClientError::Decode {
            endpoint: endpoint.into(),
            message: "the answer names no pipeline run".into(),
        })
    }
}

/// A name as one path segment: escaped, so a typo cannot reach another endpoint.
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn pipeline_path(pipeline: &str, rest: &str) -> String {
    format!("/api/ctflow/v1/pipelines/{}{rest}", segment(pipeline))
}

/// What the server said to a worker's claim on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobClaim {
    /// The run is this worker's to run now.
    Taken,
    /// Another worker runs this attempt: its delivery settles the job (or comes back
    /// as a redelivery if that worker died). Why, in words.
    RunningElsewhere(String),
    /// The run no longer waits for this attempt: why.
    Stale(String),
}

/// A pipeline run with its history, as `describe` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescribedRun {
    pub pipeline_run: PipelineRun,
    #[serde(default)]
    pub events: Vec<PipelineRunEvent>,
    /// The training data snapshot the run trains on, when its pipeline names its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_snapshot: Option<DataSnapshot>,
}

/// The training snapshot of a pipeline model's champion: the reference of
/// `reference: champion` drift triggers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChampionSnapshot {
    pub model: String,
    pub alias: String,
    pub version: String,
    pub run_id: String,
    pub snapshot: DataSnapshot,
}

impl TrackingClient {
    /// The champion's training snapshot; `None` while the model has no champion, or its
    /// champion was not trained on a recorded snapshot.
    pub async fn champion_snapshot(
        &self,
        pipeline: &str,
    ) -> ClientResult<Option<ChampionSnapshot>> {
        let path = pipeline_path(pipeline, "/champion-snapshot");
        match self.get_path(&path, &[]).await {
            Ok(body) => decode(&path, body).map(Some),
            Err(ClientError::Api {
                status: 404, code, ..
            }) if code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A pipeline by name.
    pub async fn pipeline(&self, name: &str) -> ClientResult<PipelineRecord> {
        #[derive(Deserialize)]
        struct Body {
            pipeline: PipelineRecord,
        }
        let path = pipeline_path(name, "");
        let body: Body = decode(&path, self.get_path(&path, &[]).await?)?;
        Ok(body.pipeline)
    }

    /// A pipeline run with its history.
    pub async fn describe_run(&self, id: &str) -> ClientResult<DescribedRun> {
        let path = format!("/api/ctflow/v1/pipeline-runs/{}", segment(id));
        decode(&path, self.get_path(&path, &[]).await?)
    }

    /// Asks to start the job a worker was handed (attempt `attempt`, its `delivered`-th
    /// delivery) before starting anything; the server decides, so of two workers handed
    /// the same job one is told [`JobClaim::Taken`] and the other why not.
    pub async fn claim_job(
        &self,
        pipeline_run: &str,
        attempt: i64,
        delivered: u64,
        worker: &str,
    ) -> ClientResult<JobClaim> {
        #[derive(Deserialize)]
        struct Body {
            claimed: bool,
            #[serde(default)]
            running_elsewhere: bool,
            #[serde(default)]
            reason: String,
        }
        let path = format!(
            "/api/ctflow/v1/pipeline-runs/{}/claim",
            segment(pipeline_run)
        );
        let body = json!({ "attempt": attempt, "delivered": delivered, "worker": worker });
        let answer: Body = decode(
            &path,
            self.send_path(reqwest::Method::POST, &path, &body).await?,
        )?;
        Ok(if answer.claimed {
            JobClaim::Taken
        } else if answer.running_elsewhere {
            JobClaim::RunningElsewhere(answer.reason)
        } else {
            JobClaim::Stale(answer.reason)
        })
    }

    /// Pipeline runs, newest first: of one pipeline, or of every pipeline the caller may
    /// read; only those in `phases` when given (`Running,Queued`).
    pub async fn pipeline_runs(
        &self,
        pipeline: Option<&str>,
        phases: Option<&str>,
        max_results: i64,
    ) -> ClientResult<Vec<PipelineRun>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            pipeline_runs: Vec<PipelineRun>,
        }
        let path = match pipeline {
            Some(name) => pipeline_path(name, "/runs"),
            None => "/api/ctflow/v1/pipeline-runs".into(),
        };
        let mut query = vec![("max_results", max_results.to_string())];
        if let Some(phases) = phases {
            query.push(("phase", phases.to_string()));
        }
        let body: Body = decode(&path, self.get_path(&path, &query).await?)?;
        Ok(body.pipeline_runs)
    }

    /// Every pipeline the caller may read.
    pub async fn pipelines(&self) -> ClientResult<Vec<PipelineRecord>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            pipelines: Vec<PipelineRecord>,
        }
        let path = "/api/ctflow/v1/pipelines";
        let body: Body = decode(path, self.get_path(path, &[]).await?)?;
        Ok(body.pipelines)
    }

    /// The files trigger `index` of a pipeline has already seen.
    pub async fn seen_files(&self, pipeline: &str, index: usize) -> ClientResult<BTreeSet<String>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            files: BTreeSet<String>,
        }
        let path = pipeline_path(pipeline, &format!("/triggers/{index}/seen-files"));
        let body: Body = decode(&path, self.get_path(&path, &[]).await?)?;
        Ok(body.files)
    }

    /// Records files as seen by trigger `index` (judged, or given up on).
    pub async fn mark_seen(
        &self,
        pipeline: &str,
        index: usize,
        files: &[String],
    ) -> ClientResult<()> {
        let path = pipeline_path(pipeline, &format!("/triggers/{index}/seen-files"));
        self.send_path(reqwest::Method::POST, &path, &json!({ "files": files }))
            .await
            .map(|_| ())
    }

    /// Records new files of data trigger `index` as one pipeline run (and the files as
    /// seen, in the same transaction). `None` when every file had been seen already.
    pub async fn record_data(
        &self,
        pipeline: &str,
        index: usize,
        files: &[String],
    ) -> ClientResult<Option<Recorded>> {
        let path = pipeline_path(pipeline, "/data-events");
        let body = json!({ "trigger_index": index, "files": files });
        recorded(
            &path,
            self.send_path(reqwest::Method::POST, &path, &body).await?,
        )
    }

    /// Records a drift trigger event: the files judged and the check run that found the
    /// drift go with it.
    pub async fn record_drift(
        &self,
        event: &DriftEvent,
        files: &[String],
        check_run: &str,
    ) -> ClientResult<Recorded> {
        let path = pipeline_path(&event.pipeline, "/drift-events");
        let extra = [("files", json!(files)), ("check_run", json!(check_run))];
        self.record_event(path, event, extra).await
    }

    /// Posts a trigger event (the event's fields and `extra` beside them) and returns the
    /// pipeline run it started, or the one it was a duplicate of.
    async fn record_event(
        &self,
        path: String,
        event: &impl Serialize,
        extra: impl IntoIterator<Item = (&str, Value)>,
    ) -> ClientResult<Recorded> {
        let mut body = serde_json::to_value(event).map_err(|e| ClientError::Decode {
            endpoint: path.clone(),
            message: e.to_string(),
        })?;
        if let Value::Object(map) = &mut body {
            map.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        recorded(
            &path,
            self.send_path(reqwest::Method::POST, &path, &body).await?,
        )?
        .ok_or_else(|| ClientError::Decode {
            endpoint: path,
            message: "the answer names no pipeline run".into(),
        })
    }
}

/// One ground-truth label for a served row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLabel {
    /// The request id the serving answered with (`x-request-id`).
    pub request_id: String,
    /// The row of the request (0 for single-row requests).
    #[serde(default)]
    pub row: u32,
    /// The true outcome: a number, a bool or text.
    pub label: Value,
}

/// A stored label, with when it arrived.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedLabel {
    /// Arrival order.
    pub seq: i64,
    /// The request id.
    pub request_id: String,
    /// The row of the request.
    pub row: u32,
    /// The label.
    pub label: Value,
    /// When it arrived, epoch ms.
    pub received_time: i64,
}

/// What sending labels did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackOutcome {
    /// New labels.
    pub stored: u64,
    /// Labels sent before, unchanged.
    pub unchanged: u64,
    /// Labels that replaced a different one.
    pub replaced: u64,
}

#[derive(Deserialize)]
struct LabelPage {
    labels: Vec<ReceivedLabel>,
    #[serde(default)]
    next_after: Option<i64>,
}

fn model_path(model: &str, rest: &str) -> String {
    format!("/api/ctflow/v1/models/{}{rest}", segment(model))
}

impl TrackingClient {
    /// Sends labels for a model's served predictions (at most 10,000 per call).
    pub async fn send_feedback(
        &self,
        model: &str,
        labels: &[FeedbackLabel],
    ) -> ClientResult<FeedbackOutcome> {
        let path = model_path(model, "/feedback");
        let body = json!({ "labels": labels });
        decode(
            &path,
            self.send_path(reqwest::Method::POST, &path, &body).await?,
        )
    }

    /// Every label of a model that arrived at or after `received_after` (epoch ms).
    pub async fn feedback_since(
        &self,
        model: &str,
        received_after: i64,
    ) -> ClientResult<Vec<ReceivedLabel>> {
        let path = model_path(model, "/feedback");
        let mut labels = Vec::new();
        let mut after = 0i64;
        loop {
            let query = [
                ("received_after", received_after.to_string()),
                ("after", after.to_string()),
                ("max_results", "10000".to_string()),
            ];
            let page: LabelPage = decode(&path, self.get_path(&path, &query).await?)?;
            labels.extend(page.labels);
            match page.next_after {
                Some(next) if next > after => after = next,
                _ => return Ok(labels),
            }
        }
    }

    /// Records that live quality crossed a performance trigger's threshold.
    pub async fn record_performance(
        &self,
        event: &ctflow_core::monitoring::PerformanceEvent,
        monitoring_run: Option<&str>,
    ) -> ClientResult<Recorded> {
        let path = pipeline_path(&event.pipeline, "/performance-events");
        let extra = monitoring_run.map(|run| ("monitoring_run", json!(run)));
        self.record_event(path, event, extra).await
    }

    /// Reports a serving replica's shadow numbers on a shadowing pipeline run, with the
    /// mirrored rows it kept for live metrics (at most 10,000). `false` when the run no
    /// longer shadows (its gate decided, or it was canceled).
    pub async fn record_shadow(
        &self,
        pipeline_run: &str,
        replica: &str,
        tally: &ctflow_core::shadow::ShadowTally,
        predictions: &[ctflow_core::shadow::ShadowPrediction],
    ) -> ClientResult<bool> {
        #[derive(Deserialize)]
        struct Body {
            recorded: bool,
        }
        let path = format!(
            "/api/ctflow/v1/pipeline-runs/{}/shadow",
            segment(pipeline_run)
        );
        let body = json!({ "replica": replica, "tally": tally, "predictions": predictions });
        let answer: Body = decode(
            &path,
            self.send_path(reqwest::Method::POST, &path, &body).await?,
        )?;
        Ok(answer.recorded)
    }
}
