//! The `TrainingPipeline` spec: what to train (an MLflow project), when (triggers), how to
//! judge the candidate (gates) and where to promote it.
//!
//! One serde type serves both homes: the content of a local pipeline YAML file
//! (`ctflow up --pipelines DIR`, the API) and the `spec` of the Kubernetes CRD, whose schema
//! is derived from these types (`schemars`; see `ctflow-kube`).
//! Field names are camelCase as in Kubernetes; unknown fields are refused so a typo is an
//! error instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

mod explain;
mod validate;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `apiVersion` of pipeline documents and TrainingPipeline objects.
pub const API_VERSION: &str = "ctflow.dev/v1alpha1";
/// The `kind` of pipeline documents.
pub const KIND: &str = "TrainingPipeline";

/// A pipeline document as written in a file: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineDocument {
    /// Always `ctflow.dev/v1alpha1`.
    pub api_version: String,
    /// Always `TrainingPipeline`.
    pub kind: String,
    /// The pipeline's name and labels.
    pub metadata: Metadata,
    /// What the pipeline does.
    pub spec: TrainingPipelineSpec,
}

/// A pipeline's name and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The pipeline's name: a DNS label, unique in the store.
    pub name: String,
    /// Labels, as on any Kubernetes object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a pipeline trains, when, and how its candidates are judged and promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingPipelineSpec {
    /// The MLflow project that trains the model.
    pub project: ProjectRef,
    /// The MLflow experiment the runs go to (created when missing); default: the
    /// pipeline's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The registered model the candidate is promoted in. Without it the pipeline only
    /// trains: no CT/CD gates, no promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// The training data: every pipeline run records a snapshot of these files before it
    /// starts, and its job reads that snapshot's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::data::TrainingData>,
    /// What starts a run: schedules, new data, drift, webhooks (manual triggers always work).
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// What a trigger does while another run of the pipeline is active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How often a failed attempt is tried again.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The longest a job may run before it is stopped and the pipeline run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// The CI, CT and CD gates a candidate passes on its way to champion.
    #[serde(default)]
    pub gates: Gates,
    /// The aliases and stages promotion moves, and where the champion is served.
    #[serde(default)]
    pub promotion: Promotion,
    /// What a job needs to run (CPU, memory, GPUs).
    #[serde(default)]
    pub resources: Resources,
    /// A suspended pipeline records no new trigger events.
    #[serde(default)]
    pub suspend: bool,
    /// Live metrics of the served champion (needs `promotion.serving.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// How a job runs as a Kubernetes Job (workers started with `--executor kubernetes`);
    /// local workers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesJob>,
}

/// The Kubernetes side of a job: where its pod may run and anything else its pod template
/// needs. The image is `project.image`; CPU, memory and GPUs are `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesJob {
    /// Node labels the pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates (Kubernetes' `tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The pod's service account (default: the namespace's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How long a finished Job stays for inspection (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<DurationSpec>,
    /// Merged onto the generated pod template (a JSON merge patch: volumes, env,
    /// annotations, securityContext, ...). The job's container is named `job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub pod_template: Option<serde_json::Value>,
}

/// A Kubernetes toleration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// The taint key it tolerates (all keys when empty and `operator: Exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The taint value it tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// How long a `NoExecute` taint is tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The MLflow project a pipeline runs, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectRef {
    /// A local folder (relative to the pipeline file) or a git URI.
    pub uri: String,
    /// The entry point of the MLproject to run.
    #[serde(default = "default_entry_point")]
    pub entry_point: String,
    /// Parameters passed to the entry point (a trigger's parameters override them).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// `local`, `virtualenv`, `uv` or `conda`.
    #[serde(default = "default_env_manager")]
    pub env_manager: String,
    /// A git commit, branch or tag, for git URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The container image the job runs in on Kubernetes (unused by local workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn default_entry_point() -> String {
    "main".into()
}

fn default_env_manager() -> String {
    "local".into()
}

/// The registered model a pipeline's candidates are versions of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRef {
    /// The registered model's name.
    pub name: String,
    /// The run's logged model registered when the training script registered none.
    #[serde(default = "default_logged_model_name")]
    pub logged_model: String,
}

fn default_logged_model_name() -> String {
    "model".into()
}

/// What starts a pipeline run. Written as a one-key map: `- schedule: {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Trigger {
    /// Cron ticks in a time zone.
    Schedule(ScheduleTrigger),
    /// New files under a glob or object prefix.
    Data(DataTrigger),
    /// A drift check of new data against a reference.
    Drift(Box<DriftTrigger>),
    /// A signed HTTP call (a GitHub-style webhook).
    Webhook(WebhookTrigger),
    /// Live quality of the served champion, from feedback labels joined to the
    /// pipeline's inference log, crossed a threshold.
    Performance(PerformanceTrigger),
}

impl Trigger {
    /// The trigger's kind as written (`schedule`, `data`, `drift`, `webhook`).
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule(_) => "schedule",
            Trigger::Data(_) => "data",
            Trigger::Drift(_) => "drift",
            Trigger::Webhook(_) => "webhook",
            Trigger::Performance(_) => "performance",
        }
    }

    /// The name of the set of files a watched trigger has already seen (`data/0/<path>`,
    /// `drift/1/<current>`); `None` for the triggers that watch no files.
    pub fn cursor_key(&self, index: usize) -> Option<String> {
        match self {
            Trigger::Data(d) => Some(format!("data/{index}/{}", d.path)),
            Trigger::Drift(d) => Some(format!("drift/{index}/{}", d.current)),
            Trigger::Schedule(_) | Trigger::Webhook(_) | Trigger::Performance(_) => None,
        }
    }
}

/// Retrains when the champion's live quality falls: with at least `minLabels` labelled
/// predictions made within `window`, `metric` below `below` (or above `above`, for
/// error metrics). Judged by the watcher's monitor from the pipeline's own inference log
/// (`promotion.serving.log`) and the feedback labels sent for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerformanceTrigger {
    /// A live metric: accuracy, f1, rmse or mae.
    pub metric: String,
    /// Retrain when the metric falls below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Retrain when the metric rises above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Predictions made within this span of now count.
    #[serde(default = "default_performance_window")]
    pub window: DurationSpec,
    /// Fewer labelled predictions in the window decide nothing.
    #[serde(default = "default_min_labels")]
    pub min_labels: u32,
}

fn default_performance_window() -> DurationSpec {
    DurationSpec(Duration::from_secs(3600))
}

fn default_min_labels() -> u32 {
    100
}

/// Live metrics of the served model, computed from the pipeline's inference log and the
/// feedback labels sent for its model, logged per served version as MLflow metrics on a
/// monitoring run (experiment `<pipeline>-monitoring`) and exported on `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Monitoring {
    /// The live metrics: accuracy, f1, rmse, mae.
    pub metrics: Vec<String>,
    /// Predictions made within this span of now count.
    #[serde(default = "default_performance_window")]
    pub window: DurationSpec,
    /// How often the metrics (and performance triggers) are computed.
    #[serde(default = "default_monitoring_interval")]
    pub interval: DurationSpec,
}

fn default_monitoring_interval() -> DurationSpec {
    DurationSpec(Duration::from_secs(30))
}

/// Starts a run on each tick of a cron pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Five fields (minute hour day-of-month month day-of-week), optional seconds first.
    pub cron: String,
    /// An IANA zone name; default UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What happens to ticks missed while ctflow was down.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// With `catchUp: all`, the most missed ticks started at once.
    #[serde(default = "default_max_runs")]
    pub max_runs: u32,
    /// A tick later than this after its scheduled time is not started (like a CronJob's
    /// `startingDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<DurationSpec>,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_max_runs() -> u32 {
    10
}

/// What happens to ticks missed while ctflow was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Missed ticks are dropped; the schedule resumes with the next tick.
    Skip,
    /// The newest missed tick runs once.
    #[default]
    Latest,
    /// Every missed tick runs, oldest first, at most `maxRuns` of them.
    All,
}

/// Starts a run when new files arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataTrigger {
    /// A glob of files (relative to the pipeline file); each new match triggers once.
    pub path: String,
    /// Files that arrive within this window start one run together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<DurationSpec>,
}

/// The `reference` of a drift trigger that compares with what the champion learned from.
pub const CHAMPION_REFERENCE: &str = "champion";

/// A drift test on watched data. The drift watcher compares the current data with the
/// reference and reports a drift event (`crate::trigger::DriftEvent`) when the dataset drifts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftTrigger {
    /// The data new files are compared with: a path or glob, or `champion` for the
    /// training snapshot of the model's current champion (it follows promotions and
    /// rollbacks; a file literally named `champion` is `./champion`).
    pub reference: String,
    /// The current data: a glob of files (relative to the pipeline file, or `s3://`), or
    /// `{ served: <pipeline or model> }` for what a served model was sent (its inference
    /// log).
    pub current: DriftCurrent,
    /// `auto` (Evidently's choice per column) or one method for every column: `ks`,
    /// `chisquare`, `z`, `wasserstein`, `jensenshannon`, `psi`.
    #[serde(default = "default_drift_method")]
    pub method: String,
    /// The threshold of every column's test; each method's default when absent (0.05 for
    /// p-values, 0.1 for distances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Below this many current rows the verdict is "insufficient data": the files wait
    /// for more.
    #[serde(default)]
    pub min_rows: u64,
    /// Only these columns are compared (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Per-column method and threshold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, DriftColumn>,
    /// Columns whose drift alone makes the dataset drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical: Vec<String>,
    /// The share of drifted columns that makes the dataset drift.
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
    /// Multiple-testing correction of the p-value columns: `none`, `bonferroni`, `fdr`.
    #[serde(default)]
    pub correction: crate::drift::Correction,
    /// Columns to treat as categories, or as numbers, whatever they hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    /// Columns to treat as numeric whatever their values look like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numeric: Vec<String>,
    /// Which current rows a check judges: the new files (default), the last N rows, or a
    /// time span on a timestamp column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DriftWindow>,
}

/// Where a drift trigger's current data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DriftCurrent {
    /// A path or glob (relative to the pipeline file), or an `s3://bucket/prefix` glob.
    Files(String),
    /// The inference log of a served model.
    Served(ServedCurrent),
}

/// The inference log a drift trigger reads: the `promotion.serving.log` of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedCurrent {
    /// The pipeline whose serving target logs, by its name or its model's name.
    pub served: String,
}

// NB: a Kubernetes structural schema cannot say "a string or an object"; the field is
// left open to the API server and checked by the spec validation (reported by field).
impl JsonSchema for DriftCurrent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DriftCurrent".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The current data: a glob of files (relative to the pipeline file, or s3://bucket/prefix), or { served: <pipeline or model> } for a served model's inference log.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

impl fmt::Display for DriftCurrent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftCurrent::Files(glob) => f.write_str(glob),
            DriftCurrent::Served(s) => write!(f, "served:{}", s.served),
        }
    }
}

impl DriftTrigger {
    /// The pipeline or model whose inference log is the current data, if it is.
    pub fn served(&self) -> Option<&str> {
        match &self.current {
            DriftCurrent::Served(s) => Some(&s.served),
            DriftCurrent::Files(_) => None,
        }
    }

    /// Whether the reference is the champion's training snapshot rather than a file.
    pub fn references_champion(&self) -> bool {
        self.reference.trim() == CHAMPION_REFERENCE
    }
}

/// How one column is judged, over the trigger's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftColumn {
    /// The test for this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The threshold for this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// `lastRows: N`, or `timeColumn` with `last` (rows within that span of the newest
/// timestamp). Either reads every file the glob matches, in name order, when a new one
/// arrives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftWindow {
    /// Compare the newest N rows of the current files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rows: Option<u64>,
    /// Compare the rows within `last` of the newest timestamp in this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_column: Option<String>,
    /// With `timeColumn`: how far back from the newest timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DurationSpec>,
}

fn default_drift_method() -> String {
    "auto".into()
}

fn default_drift_share() -> f64 {
    0.5
}

/// When the pipeline's schedules fire next after `now_ms` (the earliest of them); `None`
/// for a suspended pipeline or one without a valid schedule.
pub fn next_scheduled_run(spec: &TrainingPipelineSpec, now_ms: i64) -> Option<i64> {
    if spec.suspend {
        return None;
    }
    spec.triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Schedule(s) => crate::schedule::Schedule::new(&s.cron, &s.timezone)
                .ok()?
                .next_after(now_ms),
            _ => None,
        })
        .min()
}

/// A trigger's method: `None` for `auto`.
pub fn drift_method(text: &str) -> Result<Option<crate::drift::Method>, String> {
    if text == "auto" {
        Ok(None)
    } else {
        crate::drift::Method::parse(text).map(Some)
    }
}

/// An HMAC-signed POST from a CI system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTrigger {
    /// The environment variable of the server that holds the shared secret.
    pub secret_env: String,
    /// Project parameters taken from the JSON payload: name -> JSON pointer
    /// (`/head_commit/id`). The entry point should declare them (undeclared parameters
    /// are appended to its command as `--name value`, as MLflow does).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Run tags taken from the payload: tag name -> JSON pointer; the run gets
    /// `ctflow.webhook.<name>`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// What a trigger does while another run of the same pipeline is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs overlap freely.
    Allow,
    /// A trigger that arrives while a run is active is recorded as skipped.
    #[default]
    Forbid,
    /// A new trigger cancels the active runs and starts.
    Replace,
    /// A new trigger waits until the active run ends.
    Enqueue,
}

/// Retries of a failed attempt with exponential backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt fails.
    #[serde(default)]
    pub limit: u32,
    /// The wait before the first retry.
    #[serde(default = "default_backoff")]
    pub backoff: DurationSpec,
    /// What each further wait is multiplied by (at least 1).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// The longest wait.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: DurationSpec,
}

fn default_backoff() -> DurationSpec {
    DurationSpec(Duration::from_secs(10))
}

fn default_factor() -> f64 {
    2.0
}

fn default_max_backoff() -> DurationSpec {
    DurationSpec(Duration::from_secs(600))
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: 0,
            backoff: default_backoff(),
            factor: default_factor(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 = the first retry):
    /// `backoff * factor^(retry-1)`, capped at `maxBackoff`.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.backoff.0.as_secs_f64();
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let secs = base * self.factor.powi(exponent);
        let cap = self.max_backoff.0;
        // NB: a document is checked (factor >= 1) after it is read; a delay asked of an
        // unchecked one must not panic either.
        if !(secs.is_finite() && secs >= 0.0) {
            return cap;
        }
        Duration::try_from_secs_f64(secs).map_or(cap, |delay| delay.min(cap))
    }
}

/// The three gates a candidate passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gates {
    /// Checks that run before training; a failing one stops the run.
    #[serde(default)]
    pub ci: CiGate,
    /// The candidate's metrics against thresholds and the champion.
    #[serde(default)]
    pub ct: CtGate,
    /// Who lets the candidate become champion: automatically, or a person.
    #[serde(default)]
    pub cd: CdGate,
}

/// Checks that run before training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiGate {
    /// Commands run in the project folder before training, in order.
    #[serde(default)]
    pub checks: Vec<CiCheck>,
    /// Record failures without stopping the run (shadow mode).
    #[serde(default)]
    pub dry_run: bool,
}

/// One CI check: a shell command that must exit 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiCheck {
    /// Its name in the run's history (default: the command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The shell command.
    pub run: String,
}

/// The CT gate: the candidate's metrics against thresholds and the current champion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CtGate {
    /// The comparisons; all must hold.
    #[serde(default)]
    pub metrics: Vec<MetricThreshold>,
    /// What a missing or non-finite number does to the verdict.
    #[serde(default)]
    pub on_insufficient_data: InsufficientData,
    /// Record the verdict without acting on it (shadow mode).
    #[serde(default)]
    pub dry_run: bool,
    /// Score the candidate and the champion on the same data before comparing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// MLflow's `MetricThreshold`: an absolute bound, and changes relative to the champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricThreshold {
    /// The metric compared (its latest value in the candidate's run).
    pub metric: String,
    /// The candidate must reach this value (>= when greater is better, else <=).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The candidate must beat the champion by more than this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_absolute_change: Option<f64>,
    /// The candidate must beat the champion by more than this fraction of its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_relative_change: Option<f64>,
    /// Whether larger is better (default true).
    #[serde(default = "default_true")]
    pub greater_is_better: bool,
    /// Whose numbers the change checks compare: `sameData` (both models scored on one
    /// snapshot by the gate's evaluation step; the default when the gate has one) or
    /// `training` (each model's own training run, on its own data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
}

/// The numbers a change check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Against {
    /// The candidate and the champion scored on the same evaluation snapshot.
    SameData,
    /// Each model's training run metrics.
    Training,
}

/// The CT gate's evaluation step: after training, ctflow runs this entry point once for
/// the candidate and once for the champion, each with the run's data snapshot as its
/// manifest and the model's URI as a parameter; both log their metrics to runs of their
/// own, and the change checks compare those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evaluation {
    /// The MLproject entry point that scores a model.
    #[serde(default = "default_evaluate_entry")]
    pub entry_point: String,
    /// The entry point's parameter that gets the model URI.
    #[serde(default = "default_model_uri_parameter")]
    pub model_parameter: String,
}

/// Tags the worker sets on a training run once the evaluation step scored both models;
/// the controller's CT gate reads them.
pub mod evaluation_tags {
    /// The MLflow run that scored the candidate.
    pub const CANDIDATE_RUN: &str = "ctflow.evaluation.candidate_run";
    /// The MLflow run that scored the champion (absent when there was none).
    pub const CHAMPION_RUN: &str = "ctflow.evaluation.champion_run";
    /// The champion version that was scored.
    pub const CHAMPION_VERSION: &str = "ctflow.evaluation.champion_version";
    /// The data snapshot both were scored on.
    pub const SNAPSHOT: &str = "ctflow.evaluation.snapshot";
}

fn default_evaluate_entry() -> String {
    "evaluate".into()
}

fn default_model_uri_parameter() -> String {
    "model_uri".into()
}

fn default_true() -> bool {
    true
}

/// What the CT gate does when a number it needs is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InsufficientData {
    /// Missing numbers fail the gate.
    #[default]
    Fail,
    /// Missing numbers let the gate pass.
    Pass,
    /// The pipeline run waits for a person to approve or reject it.
    Pause,
}

/// The CD gate: how a candidate that passed CT becomes champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdGate {
    /// `auto`: at once; `manual`: after a person approves.
    #[serde(default)]
    pub approval: Approval,
    /// How long a manual approval may wait before the run is rejected.
    #[serde(default = "default_approval_timeout")]
    pub timeout: DurationSpec,
    /// Record what would have been waited for, and promote anyway.
    #[serde(default)]
    pub dry_run: bool,
    /// Who may approve or reject a promotion; empty: anyone who may manage the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Before promotion, the challenger answers a mirrored copy of live traffic beside the
    /// champion, and these criteria judge the two on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowGate>,
}

/// The shadow part of the CD gate: the challenger predicts on a copy of the champion's
/// traffic (the champion alone answers) until `requests` requests (and `duration`, when
/// set) have been compared, then the criteria decide. Too little traffic before `timeout`
/// is insufficient data, handled by `onInsufficientData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowGate {
    /// Mirrored requests both models must have answered before the gate decides.
    #[serde(default = "default_shadow_requests")]
    pub requests: u64,
    /// The least time the shadow runs, whatever the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationSpec>,
    /// How long the shadow may wait for its traffic before the data counts as insufficient.
    #[serde(default = "default_shadow_timeout")]
    pub timeout: DurationSpec,
    /// The least share of rows (0 to 1) on which the challenger predicts what the champion
    /// predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// The most the challenger's p99 latency may be, as a multiple of the champion's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    /// The most mirrored requests the challenger may fail on (a model error, no answer).
    #[serde(default)]
    pub max_errors: u64,
    /// What too little traffic before the timeout does: `fail` (default), `pass` (promote
    /// anyway) or `pause` (a person decides, with the numbers so far).
    #[serde(default)]
    pub on_insufficient_data: InsufficientData,
    /// Live metrics from ground truth: labels sent for mirrored requests score both models
    /// on the same rows, and the challenger may be at most `maxDrop` worse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<ShadowMetric>,
}

/// A live metric of the shadow gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowMetric {
    /// `accuracy`, `f1`, `rmse` or `mae`.
    pub metric: String,
    /// Labelled rows both models answered before the metric counts.
    #[serde(default = "default_shadow_min_labels")]
    pub min_labels: u64,
    /// How much worse than the champion's the challenger's value may be (lower for
    /// accuracy and f1, higher for rmse and mae).
    #[serde(default)]
    pub max_drop: f64,
}

fn default_shadow_min_labels() -> u64 {
    50
}

fn default_shadow_requests() -> u64 {
    100
}

fn default_shadow_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(3600))
}

fn default_approval_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(7 * 24 * 3600))
}

impl Default for CdGate {
    fn default() -> Self {
        CdGate {
            approval: Approval::Auto,
            timeout: default_approval_timeout(),
            dry_run: false,
            approvers: Vec::new(),
            shadow: None,
        }
    }
}

/// How the CD gate decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Approval {
    /// Promote at once.
    #[default]
    Auto,
    /// Wait for a person to approve or reject.
    Manual,
}

/// What promotion moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Promotion {
    /// The alias a candidate gets when CT passes (default `challenger`).
    #[serde(default = "default_challenger")]
    pub challenger_alias: String,
    /// The alias the champion has (default `champion`).
    #[serde(default = "default_champion")]
    pub champion_alias: String,
    /// Also move stages (`Staging`, `Production`, the previous champion `Archived`) for
    /// clients that still read stages.
    #[serde(default = "default_true")]
    pub stages: bool,
    /// The CD hand-off: serve the champion over MLflow's scoring protocol. `ctflow up`
    /// runs the server and moves it to each new champion; in a cluster the Helm chart's
    /// `serving` values run it as a Deployment instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingTarget>,
}

/// Where and how the champion is served (`ctflow models serve` options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingTarget {
    /// The address to listen on (default loopback).
    #[serde(default = "default_serving_host")]
    pub host: String,
    /// The port to listen on.
    pub port: u16,
    /// Python processes predicting in parallel.
    #[serde(default = "default_serving_workers")]
    pub workers: u32,
    /// `local` (the python3 on PATH), `virtualenv` or `uv` (the model's python_env.yaml).
    #[serde(default = "default_env_manager")]
    pub env_manager: String,
    /// Most concurrent requests a worker answers with one model call.
    #[serde(default = "default_serving_max_batch")]
    pub max_batch: u32,
    /// Where every scored row is logged (`ctflow models serve --log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<ServingLog>,
}

/// The inference log of a scoring server: Parquet files in a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingLog {
    /// The folder (relative to the pipeline's folder), or an object-store prefix
    /// (`s3://bucket/prefix`) the finished files are uploaded to.
    pub path: String,
    /// A file is finished once it holds this many rows.
    #[serde(default = "default_log_roll_rows")]
    pub roll_rows: u32,
    /// A file is finished once its first row is this old.
    #[serde(default = "default_log_roll_interval")]
    pub roll_interval: DurationSpec,
    /// Files older than this are deleted (kept when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<DurationSpec>,
}

fn default_log_roll_rows() -> u32 {
    100_000
}

fn default_log_roll_interval() -> DurationSpec {
    DurationSpec(Duration::from_secs(60))
}

fn default_serving_host() -> String {
    "127.0.0.1".into()
}

fn default_serving_workers() -> u32 {
    1
}

fn default_serving_max_batch() -> u32 {
    32
}

/// The most Python workers one serving target may ask for.
pub const MAX_SERVING_WORKERS: u32 = 64;

impl ServingTarget {
    fn validate(&self, err: &mut impl FnMut(String, String)) {
        if self.host.parse::<std::net::IpAddr>().is_err() {
            err(
                "spec.promotion.serving.host".into(),
                format!("'{}' is not an IP address", self.host),
            );
        }
        if self.port == 0 {
            err(
                "spec.promotion.serving.port".into(),
                "must be between 1 and 65535".into(),
            );
        }
        if !(1..=MAX_SERVING_WORKERS).contains(&self.workers) {
            err(
                "spec.promotion.serving.workers".into(),
                format!("must be between 1 and {MAX_SERVING_WORKERS}"),
            );
        }
        if !["local", "virtualenv", "uv"].contains(&self.env_manager.as_str()) {
            err(
                "spec.promotion.serving.envManager".into(),
                format!(
                    "unknown env manager '{}': use local, virtualenv or uv",
                    self.env_manager
                ),
            );
        }
        if self.max_batch == 0 {
            err(
                "spec.promotion.serving.maxBatch".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(log) = &self.log {
            if log.path.trim().is_empty() {
                err(
                    "spec.promotion.serving.log.path".into(),
                    "must name a folder".into(),
                );
            } else if let Err(message) = crate::inference::check_log_destination(&log.path) {
                err("spec.promotion.serving.log.path".into(), message);
            }
            if log.roll_rows == 0 {
                err(
                    "spec.promotion.serving.log.rollRows".into(),
                    "must be at least 1".into(),
                );
            }
            if log.roll_interval.0 < Duration::from_secs(1) {
                err(
                    "spec.promotion.serving.log.rollInterval".into(),
                    "must be at least 1s".into(),
                );
            }
        }
    }
}

fn default_challenger() -> String {
    "challenger".into()
}

fn default_champion() -> String {
    "champion".into()
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            challenger_alias: default_challenger(),
            champion_alias: default_champion(),
            stages: true,
            serving: None,
        }
    }
}

/// What a job needs to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU, as Kubernetes writes it (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, as Kubernetes writes it (`2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Whole GPUs the job needs; a local worker gives it its own through
    /// `CUDA_VISIBLE_DEVICES`.
    #[serde(default)]
    pub gpu: u32,
}

/// A duration written as `500ms`, `30s`, `5m`, `2h`, `1d` (or combined, `1h30m`), or as a
/// number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    /// A duration from text: `90s`, `5m`, `1h30m`, `2d` or plain seconds.
    pub fn parse(text: &str) -> Result<DurationSpec, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty duration".into());
        }
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(DurationSpec(Duration::from_secs(secs)));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(|| format!("'{text}' has a number without a unit (ms, s, m, h, d)"))?;
            if digits == 0 {
                return Err(format!(
                    "'{text}' is not a duration such as 30s, 5m or 1h30m"
                ));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| format!("'{text}' has a malformed number"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_secs = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => {
                    return Err(format!(
                        "'{text}' has an unknown unit '{other}': use ms, s, m, h or d, as in 30s, 5m or 1h30m"
                    ));
                }
            };
            rest = &rest[unit_len..];
            // NB: found by the pipeline_spec fuzz target: eighty digits of seconds
            // overflowed Duration and panicked.
            total = Duration::try_from_secs_f64(number * unit_secs)
                .ok()
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| format!("'{text}' is too long a duration"))?;
        }
        Ok(DurationSpec(total))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            let secs = ms / 1000;
            match secs {
                s if s != 0 && s.is_multiple_of(86400) => write!(f, "{}d", s / 86400),
                s if s != 0 && s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
                s if s != 0 && s.is_multiple_of(60) => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            }
        }
    }
}

// NB: written as a string or a whole number of seconds; `x-kubernetes-int-or-string`
// is how a Kubernetes structural schema says "either".
impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration such as 500ms, 30s, 5m, 1h30m or 1d, or a number of seconds.",
            "x-kubernetes-int-or-string": true,
        })
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(DurationSpec(Duration::from_secs(s))),
            Raw::Text(t) => DurationSpec::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// One thing wrong with a spec, named by its field path (`spec.triggers[0].schedule.cron`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// The field's path (`spec.triggers[0].schedule.cron`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Pipeline names become parts of keys, URLs and (later) Kubernetes object names, so
/// they follow the DNS-label rule.
pub fn validate_pipeline_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid pipeline name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// A pipeline as stored: its document and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The pipeline's name.
    pub name: String,
    /// The document as stored.
    pub document: PipelineDocument,
    /// `api`, or `file:<path>` for pipelines loaded from a folder.
    pub source: String,
    /// The folder relative project and data paths resolve against.
    pub base_dir: String,
    /// Grows by one with every change of the document.
    pub generation: i64,
    /// When it was first stored (epoch ms).
    pub creation_time: i64,
    /// When it last changed (epoch ms).
    pub last_updated_time: i64,
}

impl PipelineDocument {
    /// Parses a YAML (or JSON) pipeline document and validates it.
    pub fn from_yaml(text: &str) -> Result<PipelineDocument, Vec<SpecError>> {
        // NB: read as a tree first, then typed with the path of the field that does not
        // fit, so a type error names its field instead of the whole document.
        let tree: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
            vec![SpecError {
                field: "(YAML)".into(),
                message: e.to_string(),
            }]
        })?;
        let doc = PipelineDocument::typed(tree).map_err(|e| vec![e])?;
        doc.validate()?;
        Ok(doc)
    }

    /// Types a document read as a tree (YAML or JSON), without validating it: a field
    /// that does not fit is named by its path, with the form it takes or the name meant.
    pub fn typed(tree: serde_json::Value) -> Result<PipelineDocument, SpecError> {
        serde_path_to_error::deserialize(tree).map_err(|e| {
            let field = e.path().to_string();
            SpecError {
                field: if field == "." {
                    "(document)".into()
                } else {
                    field
                },
                message: explain::type_error(&e.inner().to_string()),
            }
        })
    }

    /// Checks the whole document: its kind, version, name and spec.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if self.api_version != API_VERSION {
            errors.push(SpecError {
                field: "apiVersion".into(),
                message: format!("must be '{API_VERSION}', got '{}'", self.api_version),
            });
        }
        if self.kind != KIND {
            errors.push(SpecError {
                field: "kind".into(),
                message: format!("must be '{KIND}', got '{}'", self.kind),
            });
        }
        if let Err(message) = validate_pipeline_name(&self.metadata.name) {
            errors.push(SpecError {
                field: "metadata.name".into(),
                message,
            });
        }
        if let Err(mut more) = self.spec.validate() {
            errors.append(&mut more);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl TrainingPipelineSpec {
    /// Checks what serde cannot: cron patterns, zones, globs, bounds, and combinations.
    /// Every problem is reported, each named by its field path.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = validate::Errors::default();
        validate::kubernetes(self, &mut errors);
        validate::project(self, &mut errors);
        validate::data(self, &mut errors);
        for (i, trigger) in self.triggers.iter().enumerate() {
            validate::trigger(
                self,
                &format!("spec.triggers[{i}].{}", trigger.kind()),
                trigger,
                &mut errors,
            );
        }
        validate::retry_and_timeout(self, &mut errors);
        validate::gates(self, &mut errors);
        validate::promotion(self, &mut errors);
        validate::monitoring(self, &mut errors);
        errors.into_result()
    }

    /// The experiment the pipeline's runs go to.
    pub fn experiment_name(&self, pipeline: &str) -> String {
        self.experiment
            .clone()
            .unwrap_or_else(|| pipeline.to_string())
    }
}

/// Pipelines for the crate's tests.
#[cfg(test)]
pub mod test_support {
    use super::*;

    /// A valid minimal pipeline for tests to adjust.
    pub fn pipeline() -> TrainingPipelineSpec {
        serde_json::from_value(serde_json::json!({
            "project": {"uri": "."},
            "model": {"name": "m"},
        }))
        .expect("the minimal spec parses")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::pipeline;
    use super::*;
    use serde_json::json;

    fn fields(spec: &TrainingPipelineSpec) -> Vec<String> {
        spec.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn approvers_need_a_manual_approval_and_valid_names() {
        let mut spec = pipeline();
        spec.gates.cd.approvers = vec!["alice".into(), "not a user".into()];
        assert_eq!(
            fields(&spec),
            vec!["spec.gates.cd.approvers[1]", "spec.gates.cd.approvers"]
        );
        spec.gates.cd.approval = Approval::Manual;
        spec.gates.cd.approvers.pop();
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn type_errors_name_their_field_and_the_form_it_takes() {
        let document = |spec: &str| {
            format!(
                "apiVersion: ctflow.dev/v1alpha1\nkind: TrainingPipeline\nmetadata: {{ name: p }}\nspec:\n  project: {{ uri: . }}\n{spec}"
            )
        };
        let first = |spec: &str| {
            let errors = PipelineDocument::from_yaml(&document(spec)).expect_err("refused");
            (errors[0].field.clone(), errors[0].message.clone())
        };
        assert_eq!(
            first("  retry: { limit: -1 }\n"),
            (
                "spec.retry.limit".to_string(),
                "must be a whole number, 0 or more; got integer -1".to_string()
            )
        );
        let (field, message) =
            first("  gates:\n    ct:\n      metrics: [ { metric: accuracy, threshhold: 0.9 } ]\n");
        assert_eq!(field, "spec.gates.ct.metrics[0].threshhold");
        assert!(
            message.starts_with("unknown field 'threshhold': did you mean 'threshold'?"),
            "{message}"
        );
        let (field, message) = first("  concurrencyPolicy: Forbidd\n");
        assert_eq!(field, "spec.concurrencyPolicy");
        assert!(message.contains("did you mean 'Forbid'?"), "{message}");
        let (field, message) = first("  timeout: 1 hour\n");
        assert_eq!(field, "spec.timeout");
        assert!(message.contains("use ms, s, m, h or d"), "{message}");
        let (field, _) = first("  triggers: [ { schedule: { cron: 5 } } ]\n");
        assert!(field.starts_with("spec.triggers[0]"), "{field}");
        assert_eq!(first("  project: [\n").0, "(YAML)");
    }

    #[test]
    fn a_shadow_gate_takes_defaults_and_is_checked_by_field() {
        let mut spec: TrainingPipelineSpec = serde_json::from_value(json!({
            "project": {"uri": "."},
            "model": {"name": "m"},
            "gates": {"cd": {"shadow": {"minAgreement": 0.95}}},
        }))
        .expect("parses");
        let shadow = spec.gates.cd.shadow.clone().expect("a shadow");
        assert_eq!((shadow.requests, shadow.max_errors), (100, 0));
        assert_eq!(shadow.timeout.0, Duration::from_secs(3600));
        assert_eq!(shadow.on_insufficient_data, InsufficientData::Fail);
        assert!(spec.validate().is_ok());
        spec.gates.cd.shadow = Some(ShadowGate {
            requests: 0,
            min_agreement: Some(1.5),
            max_latency_ratio: Some(0.0),
            duration: Some(DurationSpec(Duration::from_secs(7200))),
            metrics: vec![ShadowMetric {
                metric: "auc".into(),
                min_labels: 0,
                max_drop: -0.1,
            }],
            ..shadow
        });
        spec.model = None;
        assert_eq!(
            fields(&spec),
            vec![
                "spec.gates.cd.shadow",
                "spec.gates.cd.shadow.requests",
                "spec.gates.cd.shadow.minAgreement",
                "spec.gates.cd.shadow.maxLatencyRatio",
                "spec.gates.cd.shadow.metrics[0].metric",
                "spec.gates.cd.shadow.metrics[0].minLabels",
                "spec.gates.cd.shadow.metrics[0].maxDrop",
                "spec.gates.cd.shadow.duration",
            ]
        );
    }

    #[test]
    fn a_serving_target_takes_defaults_and_is_checked_by_field() {
        let mut spec: TrainingPipelineSpec = serde_json::from_value(json!({
            "project": {"uri": "."},
            "model": {"name": "m"},
            "promotion": {"serving": {"port": 5001}},
        }))
        .expect("parses");
        let target = spec.promotion.serving.clone().expect("a serving target");
        assert_eq!(
            (target.host.as_str(), target.port, target.workers),
            ("127.0.0.1", 5001, 1)
        );
        assert_eq!(
            (target.env_manager.as_str(), target.max_batch),
            ("local", 32)
        );
        assert!(spec.validate().is_ok());

        spec.model = None;
        spec.promotion.serving = Some(ServingTarget {
            host: "localhost".into(),
            port: 0,
            workers: MAX_SERVING_WORKERS + 1,
            env_manager: "conda".into(),
            max_batch: 0,
            log: Some(ServingLog {
                path: "gs://bucket/log".into(),
                roll_rows: 0,
                roll_interval: DurationSpec(Duration::from_millis(10)),
                retention: None,
            }),
        });
        assert_eq!(
            fields(&spec),
            vec![
                "spec.promotion.serving",
                "spec.promotion.serving.host",
                "spec.promotion.serving.port",
                "spec.promotion.serving.workers",
                "spec.promotion.serving.envManager",
                "spec.promotion.serving.maxBatch",
                "spec.promotion.serving.log.path",
                "spec.promotion.serving.log.rollRows",
                "spec.promotion.serving.log.rollInterval",
            ]
        );
        // An object-store prefix is a destination too; a glob or another scheme is not.
        let log_at = |path: &str| {
            let mut spec = pipeline();
            spec.promotion.serving = Some(
                serde_json::from_value(json!({"port": 5001, "log": {"path": path}}))
                    .expect("serving"),
            );
            fields(&spec)
        };
        assert!(log_at("s3://logs/iris").is_empty());
        assert_eq!(
            log_at("s3:///iris"),
            vec!["spec.promotion.serving.log.path"]
        );
        assert_eq!(
            log_at("s3://logs/*"),
            vec!["spec.promotion.serving.log.path"]
        );
        let log: ServingLog = serde_json::from_value(json!({"path": "served"})).expect("a log");
        assert_eq!(
            (log.roll_rows, log.roll_interval.0, log.retention),
            (100_000, Duration::from_secs(60), None)
        );
        let unknown = serde_json::from_value::<TrainingPipelineSpec>(json!({
            "project": {"uri": "."},
            "promotion": {"serving": {"port": 5001, "replicas": 2}},
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn kubernetes_settings_are_checked_by_field() {
        let mut spec = pipeline();
        spec.kubernetes = Some(KubernetesJob {
            tolerations: vec![Toleration {
                operator: Some("Sometimes".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            pod_template: Some(json!([1, 2])),
            ..KubernetesJob::default()
        });
        assert_eq!(
            fields(&spec),
            vec![
                "spec.kubernetes.podTemplate".to_string(),
                "spec.kubernetes.tolerations[0].operator".to_string()
            ]
        );
        let parsed: TrainingPipelineSpec = serde_json::from_value(json!({
            "project": {"uri": "."},
            "kubernetes": {"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
                           "podTemplate": {"metadata": {"annotations": {"a": "b"}}}},
        }))
        .expect("parses");
        assert!(parsed.validate().is_ok());
        let typo = serde_json::from_value::<TrainingPipelineSpec>(json!({
            "project": {"uri": "."}, "kubernetes": {"nodeSelecter": {}},
        }));
        assert!(typo.is_err(), "unknown fields are refused");
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec = pipeline();
        assert_eq!(spec.project.entry_point, "main");
        assert_eq!(spec.project.env_manager, "local");
        assert_eq!(spec.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(spec.promotion.champion_alias, "champion");
        assert_eq!(spec.gates.cd.approval, Approval::Auto);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn the_architecture_example_parses() {
        let doc: PipelineDocument = serde_json::from_value(json!({
            "apiVersion": "ctflow.dev/v1alpha1", "kind": "TrainingPipeline",
            "metadata": {"name": "iris"},
            "spec": {
                "project": {"uri": "./examples/iris", "entryPoint": "main", "parameters": {"C": "0.05"}, "image": "ctflow/iris:1"},
                "experiment": "iris-ct",
                "triggers": [
                    {"schedule": {"cron": "0 3 * * *", "timezone": "Asia/Seoul"}},
                    {"data": {"path": "/data/iris/incoming/*.csv"}},
                    {"drift": {"reference": "/r.csv", "current": "/c/*.csv", "method": "psi", "threshold": 0.2, "minRows": 500}},
                    {"webhook": {"secretEnv": "CI_SECRET", "params": {"commit": "/after"}}}
                ],
                "concurrencyPolicy": "Forbid",
                "retry": {"limit": 2, "backoff": "30s"},
                "timeout": "1h",
                "gates": {
                    "ci": {"checks": [{"run": "python -m pytest tests"}]},
                    "ct": {"metrics": [{"metric": "accuracy", "threshold": 0.9}, {"metric": "accuracy", "minAbsoluteChange": 0.0}]},
                    "cd": {"approval": "manual", "timeout": "2d"}
                },
                "model": {"name": "iris-classifier"},
                "resources": {"cpu": "1", "memory": "2Gi", "gpu": 0}
            }
        }))
        .expect("parses");
        assert!(doc.validate().is_ok(), "{:?}", doc.validate());
        assert_eq!(doc.spec.retry.backoff.0, Duration::from_secs(30));
        assert_eq!(doc.spec.gates.cd.timeout.0, Duration::from_secs(172_800));
        // A round trip through JSON keeps everything.
        let again: PipelineDocument =
            serde_json::from_value(serde_json::to_value(&doc).expect("serialises"))
                .expect("parses");
        assert_eq!(again, doc);
    }

    #[test]
    fn errors_name_the_field() {
        let mut spec = pipeline();
        spec.triggers.push(Trigger::Schedule(ScheduleTrigger {
            cron: "61 * * * *".into(),
            timezone: "UTC".into(),
            catch_up: CatchUp::Latest,
            max_runs: 0,
            starting_deadline: None,
        }));
        spec.triggers.push(Trigger::Schedule(ScheduleTrigger {
            cron: "* * * * *".into(),
            timezone: "Mars/Olympus".into(),
            catch_up: CatchUp::Latest,
            max_runs: 1,
            starting_deadline: None,
        }));
        spec.project.env_manager = "docker".into();
        spec.gates.ct.metrics.push(MetricThreshold {
            metric: "acc".into(),
            threshold: None,
            min_absolute_change: None,
            min_relative_change: Some(-1.0),
            greater_is_better: true,
            against: Some(Against::SameData),
        });
        spec.promotion.challenger_alias = "champion".into();
        assert_eq!(
            fields(&spec),
            vec![
                "spec.project.envManager",
                "spec.triggers[0].schedule.cron",
                "spec.triggers[0].schedule.maxRuns",
                "spec.triggers[1].schedule.timezone",
                "spec.gates.ct.metrics[0].minRelativeChange",
                "spec.gates.ct.metrics[0].against",
                "spec.promotion",
            ]
        );
    }

    #[test]
    fn the_next_scheduled_run_is_the_earliest_schedule() {
        let mut spec = pipeline();
        assert_eq!(next_scheduled_run(&spec, 0), None);
        for (cron, zone) in [
            ("0 3 * * *", "UTC"),
            ("30 * * * *", "UTC"),
            ("0 1 * * *", "Asia/Seoul"),
        ] {
            spec.triggers.push(Trigger::Schedule(ScheduleTrigger {
                cron: cron.into(),
                timezone: zone.into(),
                catch_up: CatchUp::Latest,
                max_runs: 1,
                starting_deadline: None,
            }));
        }
        // 2026-11-26T10:00:00Z: the half-hour schedule is next, at 10:30.
        let now = 1_795_687_200_000;
        assert_eq!(next_scheduled_run(&spec, now), Some(now + 30 * 60_000));
        spec.suspend = true;
        assert_eq!(next_scheduled_run(&spec, now), None);
    }

    #[test]
    fn the_readme_example_is_a_valid_pipeline() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```yaml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .find(|text| text.contains("kind: TrainingPipeline"))
            .expect("the README shows a pipeline");
        let document = PipelineDocument::from_yaml(block).expect("the README's pipeline is valid");
        assert_eq!(document.spec.triggers.len(), 4);
    }

    #[test]
    fn performance_triggers_and_monitoring_need_the_served_log() {
        let with_log = |spec: &mut TrainingPipelineSpec| {
            spec.model = Some(serde_json::from_value(json!({"name": "iris"})).expect("model"));
            spec.promotion.serving = Some(
                serde_json::from_value(json!({"port": 5001, "log": {"path": "served"}}))
                    .expect("serving"),
            );
        };
        let check = |trigger: serde_json::Value, log: bool| {
            let mut spec = pipeline();
            if log {
                with_log(&mut spec);
            }
            spec.triggers = vec![Trigger::Performance(
                serde_json::from_value(trigger).expect("a performance trigger"),
            )];
            fields(&spec)
        };
        let trigger = json!({"metric": "accuracy", "below": 0.9, "window": "1h", "minLabels": 200});
        assert!(check(trigger.clone(), true).is_empty());
        assert_eq!(check(trigger, false), vec!["spec.triggers[0].performance"]);
        assert_eq!(
            check(json!({"metric": "auc", "below": 0.9, "minLabels": 0}), true),
            vec![
                "spec.triggers[0].performance.metric",
                "spec.triggers[0].performance.minLabels"
            ]
        );
        assert_eq!(
            check(json!({"metric": "mae", "below": 0.1, "above": 0.5}), true),
            vec!["spec.triggers[0].performance"]
        );
        let parsed: PerformanceTrigger =
            serde_json::from_value(json!({"metric": "rmse", "above": 2.5})).expect("defaults");
        assert_eq!(parsed.min_labels, 100);
        assert_eq!(parsed.window.0, Duration::from_secs(3600));

        let mut spec = pipeline();
        spec.monitoring = Some(
            serde_json::from_value(json!({"metrics": ["accuracy", "f2"], "interval": "0s"}))
                .expect("monitoring"),
        );
        assert_eq!(
            fields(&spec),
            vec![
                "spec.monitoring.metrics[1]",
                "spec.monitoring.interval",
                "spec.monitoring"
            ]
        );
        with_log(&mut spec);
        spec.monitoring = Some(
            serde_json::from_value(json!({"metrics": ["accuracy", "F1"]})).expect("monitoring"),
        );
        assert!(fields(&spec).is_empty());
    }

    #[test]
    fn drift_triggers_are_checked_field_by_field() {
        let drift = |extra: serde_json::Value| {
            let mut trigger = json!({"reference": "ref.csv", "current": "in/*.csv"});
            if let (Some(t), Some(e)) = (trigger.as_object_mut(), extra.as_object()) {
                t.extend(e.clone());
            }
            let mut spec = pipeline();
            spec.triggers = vec![Trigger::Drift(Box::new(
                serde_json::from_value(trigger).expect("a drift trigger"),
            ))];
            fields(&spec)
        };
        // Evidently's defaults need nothing else.
        assert!(drift(json!({})).is_empty());
        // The current data can be a served model's inference log.
        assert!(drift(json!({"current": {"served": "iris"}})).is_empty());
        assert_eq!(
            drift(json!({"current": {"served": " "}})),
            vec!["spec.triggers[0].drift.current.served"]
        );
        assert_eq!(
            drift(json!({"current": ""})),
            vec!["spec.triggers[0].drift.current"]
        );
        let served: DriftTrigger =
            serde_json::from_value(json!({"reference": "champion", "current": {"served": "iris"}}))
                .expect("a served trigger");
        assert_eq!(served.served(), Some("iris"));
        assert_eq!(served.current.to_string(), "served:iris");
        assert!(
            serde_json::from_value::<DriftTrigger>(
                json!({"reference": "r.csv", "current": {"served": "iris", "extra": 1}})
            )
            .is_err()
        );
        assert!(
            drift(
                json!({"method": "ks", "threshold": 0.01, "window": {"lastRows": 500},
                "columns": {"x": {"method": "psi", "threshold": 0.2}}, "correction": "fdr",
                "critical": ["x"], "categorical": ["code"]})
            )
            .is_empty()
        );
        assert!(drift(json!({"window": {"timeColumn": "ts", "last": "24h"}})).is_empty());
        assert_eq!(
            drift(
                json!({"method": "t-test", "threshold": -1.0, "driftShare": 0.0,
                "columns": {"x": {"method": "nope"}}})
            ),
            vec![
                "spec.triggers[0].drift.method",
                "spec.triggers[0].drift.threshold",
                "spec.triggers[0].drift.columns.x.method",
                "spec.triggers[0].drift.driftShare",
            ]
        );
        for window in [
            json!({"lastRows": 10, "timeColumn": "ts", "last": "1h"}),
            json!({"timeColumn": "ts"}),
            json!({}),
        ] {
            assert_eq!(
                drift(json!({ "window": window })),
                vec!["spec.triggers[0].drift.window"]
            );
        }
        assert_eq!(
            drift(json!({"window": {"lastRows": 0}})),
            vec!["spec.triggers[0].drift.window.lastRows"]
        );
    }

    #[test]
    fn a_champion_reference_needs_the_training_data_it_stands_for() {
        let mut spec = pipeline();
        spec.triggers = vec![Trigger::Drift(Box::new(
            serde_json::from_value(json!({"reference": "champion", "current": "in/*.csv"}))
                .expect("a drift trigger"),
        ))];
        assert_eq!(fields(&spec), vec!["spec.triggers[0].drift.reference"]);
        spec.data = Some(
            serde_json::from_value(json!({"paths": ["base.csv", "in/*.csv"]}))
                .expect("training data"),
        );
        assert!(fields(&spec).is_empty());
        spec.model = None;
        assert!(
            fields(&spec).contains(&"spec.triggers[0].drift.reference".to_string()),
            "{:?}",
            fields(&spec)
        );
    }

    #[test]
    fn training_data_is_on_paths_or_s3_and_other_stores_are_refused_by_name() {
        let mut spec = pipeline();
        spec.data = Some(
            serde_json::from_value(json!({"paths": [
                "base.csv", "s3://bucket/in/*.csv", "gs://bucket/in/*.csv", "s3:///in/*.csv",
                "s3://bucket/[in"
            ]}))
            .expect("training data"),
        );
        assert_eq!(
            fields(&spec),
            vec![
                "spec.data.paths[2]",
                "spec.data.paths[3]",
                "spec.data.paths[4]"
            ]
        );
    }

    #[test]
    fn gates_need_a_model() {
        let mut spec = pipeline();
        spec.model = None;
        spec.gates.cd.approval = Approval::Manual;
        assert_eq!(fields(&spec), vec!["spec.gates.cd"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<TrainingPipelineSpec>(json!({
            "project": {"uri": "."}, "concurrencyPolicy": "Forbid", "retries": 3
        }))
        .expect_err("typo refused");
        assert!(err.to_string().contains("retries"), "{err}");
        let err = serde_json::from_value::<TrainingPipelineSpec>(json!({
            "project": {"uri": "."}, "concurrencyPolicy": "Sometimes"
        }))
        .expect_err("bad policy refused");
        assert!(err.to_string().contains("Sometimes"), "{err}");
    }

    #[test]
    fn names_follow_dns_labels() {
        assert!(validate_pipeline_name("iris-2").is_ok());
        for bad in ["", "Iris", "-iris", "iris-", "a_b", &"x".repeat(64)] {
            assert!(validate_pipeline_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, secs) in [
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("2d", 172800.0),
            ("250ms", 0.25),
            ("90", 90.0),
        ] {
            assert_eq!(
                DurationSpec::parse(text).expect(text).0.as_secs_f64(),
                secs,
                "{text}"
            );
        }
        let eighty_digits = format!("{}0s", "1".repeat(79));
        assert!(
            DurationSpec::parse(&eighty_digits)
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            DurationSpec::parse("18446744073709551615s18446744073709551615s")
                .unwrap_err()
                .contains("too long")
        );
        for bad in ["", "m", "5x", "5", "1.5.2s"] {
            if bad == "5" {
                continue;
            }
            assert!(DurationSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(DurationSpec(Duration::from_secs(5400)).to_string(), "90m");
        assert_eq!(
            DurationSpec(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        let policy = RetryPolicy {
            limit: 5,
            backoff: DurationSpec(Duration::from_secs(10)),
            factor: 3.0,
            max_backoff: DurationSpec(Duration::from_secs(60)),
        };
        let delays: Vec<u64> = (1..=4).map(|r| policy.delay(r).as_secs()).collect();
        assert_eq!(delays, vec![10, 30, 60, 60]);
        // Unchecked documents: no cap worth the name, a shrinking factor.
        let huge = RetryPolicy {
            max_backoff: DurationSpec(Duration::MAX),
            factor: 1e300,
            ..policy.clone()
        };
        assert_eq!(huge.delay(64), Duration::MAX);
        let negative = RetryPolicy {
            factor: -2.0,
            ..policy
        };
        assert_eq!(negative.delay(2), Duration::from_secs(60));
    }

    /// YAML-shaped text: nested `key: value` lines drawn from the spec's own vocabulary,
    /// so the parser gets past syntax into the typed fields and validation.
    fn yaml_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "spec",
            "project",
            "uri",
            "model",
            "triggers",
            "schedule",
            "cron",
            "timezone",
            "data",
            "path",
            "drift",
            "gates",
            "ct",
            "metrics",
            "metric",
            "threshold",
            "cd",
            "approval",
            "approvers",
            "timeout",
            "retry",
            "limit",
            "backoff",
            "promotion",
            "serving",
            "port",
            "resources",
            "gpu",
            "kubernetes",
            "podTemplate",
            "- ",
            "",
        ]);
        let value = prop::sample::select(vec![
            "",
            "0",
            "-1",
            "1e309",
            "NaN",
            "ctflow.dev/v1alpha1",
            "TrainingPipeline",
            "\"* * * * *\"",
            "Mars/Olympus",
            "manual",
            "auto",
            "30s",
            "-5m",
            "{}",
            "[]",
            "[a, b]",
            "{ port: 70000 }",
            "'",
            "\"",
            "~",
            "true",
            "65535",
            "..",
            "|",
        ]);
        prop::collection::vec((0usize..4, key, value), 0..24).prop_map(|lines| {
            lines
                .into_iter()
                .map(|(depth, k, v)| format!("{}{k}: {v}\n", "  ".repeat(depth)))
                .collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn any_digits_are_a_duration_or_an_error(digits in "[0-9]{1,90}", unit in "(ms|s|m|h|d)") {
            let _ = DurationSpec::parse(&format!("{digits}{unit}"));
            let _ = DurationSpec::parse(&format!("{digits}{unit}{digits}{unit}"));
        }

        #[test]
        fn any_text_is_a_document_or_field_errors(text in ".{0,300}") {
            let _ = PipelineDocument::from_yaml(&text);
            let _ = DurationSpec::parse(&text);
        }

        #[test]
        fn yaml_shaped_text_is_a_document_or_field_errors(text in yaml_like()) {
            if let Err(errors) = PipelineDocument::from_yaml(&text) {
                proptest::prop_assert!(!errors.is_empty());
            }
        }
    }
}
