//! The checks of a pipeline spec that serde cannot make, one function per section. Each
//! adds what it finds to [`Errors`], named by field path, so one pass reports everything.

use super::{
    Approval, DriftCurrent, DriftTrigger, PerformanceTrigger, ShadowGate, SpecError,
    TrainingPipelineSpec, Trigger, WebhookTrigger, drift_method,
};
use crate::monitoring::LiveMetric;

/// The problems found so far.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<SpecError>);

impl Errors {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn into_result(self) -> Result<(), Vec<SpecError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

pub(super) fn kubernetes(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    let Some(kubernetes) = &spec.kubernetes else {
        return;
    };
    if kubernetes
        .pod_template
        .as_ref()
        .is_some_and(|t| !t.is_object())
    {
        errors.add(
            "spec.kubernetes.podTemplate",
            "must be an object (a pod template to merge)",
        );
    }
    for (i, toleration) in kubernetes.tolerations.iter().enumerate() {
        if let Some(op) = &toleration.operator
            && op != "Equal"
            && op != "Exists"
        {
            errors.add(
                format!("spec.kubernetes.tolerations[{i}].operator"),
                format!("must be Equal or Exists, not '{op}'"),
            );
        }
        if let Some(effect) = &toleration.effect
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect.as_str())
        {
            errors.add(
                format!("spec.kubernetes.tolerations[{i}].effect"),
                format!("must be NoSchedule, PreferNoSchedule or NoExecute, not '{effect}'"),
            );
        }
    }
}

/// The project to run and the model it trains.
pub(super) fn project(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    let project = &spec.project;
    if project.uri.trim().is_empty() {
        errors.add("spec.project.uri", "must not be empty");
    }
    if project.entry_point.trim().is_empty() {
        errors.add("spec.project.entryPoint", "must not be empty");
    }
    if !["local", "virtualenv", "uv", "conda"].contains(&project.env_manager.as_str()) {
        errors.add(
            "spec.project.envManager",
            format!(
                "'{}' is not one of local, virtualenv, uv, conda",
                project.env_manager
            ),
        );
    }
    if let Some(model) = &spec.model
        && model.name.trim().is_empty()
    {
        errors.add("spec.model.name", "must not be empty");
    }
}

/// `s3://bucket/...`: the only object storage training data can be on.
fn is_s3_glob(path: &str) -> bool {
    path.strip_prefix("s3://")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|bucket| !bucket.is_empty())
}

/// The training data.
pub(super) fn data(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    let Some(data) = &spec.data else {
        return;
    };
    if data.paths.is_empty() {
        errors.add("spec.data.paths", "must name at least one file or glob");
    }
    for (i, path) in data.paths.iter().enumerate() {
        if path.trim().is_empty() {
            errors.add(format!("spec.data.paths[{i}]"), "must not be empty");
        } else if path.contains("://") && !is_s3_glob(path) {
            errors.add(
                format!("spec.data.paths[{i}]"),
                "names object storage ctflow cannot read: use a path or s3://bucket/prefix",
            );
        } else if let Err(e) = glob::Pattern::new(path) {
            errors.add(
                format!("spec.data.paths[{i}]"),
                format!("is not a glob: {e}"),
            );
        }
    }
    if let Some(window) = &data.window {
        for (field, message) in window.problems() {
            errors.add(format!("spec.data.window.{field}"), message);
        }
    }
    if let Some(parameter) = &data.parameter
        && parameter.trim().is_empty()
    {
        errors.add("spec.data.parameter", "must name a parameter");
    }
}

/// One trigger; `base` is its field path (`spec.triggers[0].schedule`).
pub(super) fn trigger(
    spec: &TrainingPipelineSpec,
    base: &str,
    trigger: &Trigger,
    errors: &mut Errors,
) {
    match trigger {
        Trigger::Schedule(s) => {
            if let Err(e) = crate::schedule::Schedule::new(&s.cron, &s.timezone) {
                let field = if e.starts_with("unknown time zone") {
                    "timezone"
                } else {
                    "cron"
                };
                errors.add(format!("{base}.{field}"), e);
            }
            if s.max_runs == 0 {
                errors.add(format!("{base}.maxRuns"), "must be at least 1");
            }
        }
        Trigger::Data(d) => {
            if d.path.trim().is_empty() {
                errors.add(format!("{base}.path"), "must not be empty");
            }
        }
        Trigger::Drift(d) => drift(spec, base, d, errors),
        Trigger::Webhook(w) => webhook(base, w, errors),
        Trigger::Performance(p) => performance(spec, base, p, errors),
    }
}

/// Whether the pipeline's champion is served with an inference log, which live metrics
/// are computed from.
fn logs_serving(spec: &TrainingPipelineSpec) -> bool {
    spec.model.is_some()
        && spec
            .promotion
            .serving
            .as_ref()
            .is_some_and(|s| s.log.is_some())
}

const NEEDS_LOG: &str = "live metrics come from the served champion's inference log: the pipeline needs spec.model and spec.promotion.serving.log";

fn performance(
    spec: &TrainingPipelineSpec,
    base: &str,
    p: &PerformanceTrigger,
    errors: &mut Errors,
) {
    if let Err(message) = LiveMetric::parse(&p.metric) {
        errors.add(format!("{base}.metric"), message);
    }
    match (p.below, p.above) {
        (Some(_), Some(_)) | (None, None) => {
            errors.add(base.to_string(), "give one of below or above")
        }
        (Some(t), None) | (None, Some(t)) if !t.is_finite() => {
            let field = if p.below.is_some() { "below" } else { "above" };
            errors.add(format!("{base}.{field}"), "must be a number");
        }
        _ => {}
    }
    if p.window.0.is_zero() {
        errors.add(format!("{base}.window"), "must be longer than 0s");
    }
    if p.min_labels == 0 {
        errors.add(format!("{base}.minLabels"), "must be at least 1");
    }
    if !logs_serving(spec) {
        errors.add(base.to_string(), NEEDS_LOG);
    }
}

pub(super) fn monitoring(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    let Some(monitoring) = &spec.monitoring else {
        return;
    };
    if monitoring.metrics.is_empty() {
        errors.add("spec.monitoring.metrics", "name at least one live metric");
    }
    for (i, metric) in monitoring.metrics.iter().enumerate() {
        if let Err(message) = LiveMetric::parse(metric) {
            errors.add(format!("spec.monitoring.metrics[{i}]"), message);
        }
    }
    if monitoring.window.0.is_zero() {
        errors.add("spec.monitoring.window", "must be longer than 0s");
    }
    if monitoring.interval.0 < std::time::Duration::from_secs(1) {
        errors.add("spec.monitoring.interval", "must be at least 1s");
    }
    if !logs_serving(spec) {
        errors.add("spec.monitoring", NEEDS_LOG);
    }
}

fn drift(spec: &TrainingPipelineSpec, base: &str, d: &DriftTrigger, errors: &mut Errors) {
    if let Err(message) = drift_method(&d.method) {
        errors.add(format!("{base}.method"), message);
    }
    let bad_threshold = |t: &Option<f64>| t.is_some_and(|t| !t.is_finite() || t < 0.0);
    if bad_threshold(&d.threshold) {
        errors.add(format!("{base}.threshold"), "must be a non-negative number");
    }
    for (column, o) in &d.columns {
        if let Some(Err(message)) = o.method.as_deref().map(drift_method) {
            errors.add(format!("{base}.columns.{column}.method"), message);
        }
        if bad_threshold(&o.threshold) {
            errors.add(
                format!("{base}.columns.{column}.threshold"),
                "must be a non-negative number",
            );
        }
    }
    if !(d.drift_share > 0.0 && d.drift_share <= 1.0) {
        errors.add(
            format!("{base}.driftShare"),
            "must be more than 0 and at most 1",
        );
    }
    if let Some(w) = &d.window {
        match (w.last_rows, &w.time_column, &w.last) {
            (Some(0), None, None) => {
                errors.add(format!("{base}.window.lastRows"), "must be at least 1")
            }
            (Some(_), None, None) => {}
            (None, Some(column), Some(last)) => {
                if column.trim().is_empty() {
                    errors.add(format!("{base}.window.timeColumn"), "must name a column");
                }
                if last.0.is_zero() {
                    errors.add(format!("{base}.window.last"), "must be longer than 0s");
                }
            }
            _ => errors.add(
                format!("{base}.window"),
                "give either lastRows, or timeColumn with last",
            ),
        }
    }
    if d.reference.trim().is_empty() {
        errors.add(format!("{base}.reference"), "must not be empty");
    }
    if d.references_champion() && (spec.data.is_none() || spec.model.is_none()) {
        errors.add(
            format!("{base}.reference"),
            "`champion` compares with the champion's training snapshot: the pipeline needs spec.model and spec.data",
        );
    }
    match &d.current {
        DriftCurrent::Files(glob) if glob.trim().is_empty() => {
            errors.add(format!("{base}.current"), "must not be empty");
        }
        DriftCurrent::Served(s) if s.served.trim().is_empty() => {
            errors.add(
                format!("{base}.current.served"),
                "must name a pipeline (or its model) whose promotion.serving has a log",
            );
        }
        _ => {}
    }
}

fn webhook(base: &str, w: &WebhookTrigger, errors: &mut Errors) {
    if w.secret_env.trim().is_empty() {
        errors.add(
            format!("{base}.secretEnv"),
            "must name an environment variable",
        );
    }
    let pointers = w
        .params
        .iter()
        .map(|p| ("params", p))
        .chain(w.tags.iter().map(|t| ("tags", t)));
    for (map, (name, pointer)) in pointers {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            errors.add(
                format!("{base}.{map}.{name}"),
                format!("'{pointer}' is not a JSON pointer such as /head_commit/id"),
            );
        }
    }
}

pub(super) fn retry_and_timeout(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    if !(spec.retry.factor.is_finite() && spec.retry.factor >= 1.0) {
        errors.add("spec.retry.factor", "must be a number >= 1");
    }
    if spec.retry.limit > 100 {
        errors.add("spec.retry.limit", "must be at most 100");
    }
    if let Some(timeout) = spec.timeout
        && timeout.0.is_zero()
    {
        errors.add("spec.timeout", "must be longer than zero");
    }
}

/// The CI checks, the CT gate's metrics, the CD gate's approvers, and the gates that need
/// a model.
pub(super) fn gates(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    if let Some(evaluation) = &spec.gates.ct.evaluation {
        if spec.data.is_none() {
            errors.add(
                "spec.gates.ct.evaluation",
                "scores both models on the run's data snapshot: the pipeline needs spec.data",
            );
        }
        for (field, value) in [
            ("entryPoint", &evaluation.entry_point),
            ("modelParameter", &evaluation.model_parameter),
        ] {
            if value.trim().is_empty() {
                errors.add(
                    format!("spec.gates.ct.evaluation.{field}"),
                    "must not be empty",
                );
            }
        }
    }
    for (i, check) in spec.gates.ci.checks.iter().enumerate() {
        if check.run.trim().is_empty() {
            errors.add(
                format!("spec.gates.ci.checks[{i}].run"),
                "must not be empty",
            );
        }
    }
    for (i, m) in spec.gates.ct.metrics.iter().enumerate() {
        let base = format!("spec.gates.ct.metrics[{i}]");
        if m.metric.trim().is_empty() {
            errors.add(format!("{base}.metric"), "must not be empty");
        }
        if m.threshold.is_none()
            && m.min_absolute_change.is_none()
            && m.min_relative_change.is_none()
        {
            errors.add(
                base.clone(),
                "needs threshold, minAbsoluteChange or minRelativeChange",
            );
        }
        for (field, value) in [
            ("minAbsoluteChange", m.min_absolute_change),
            ("minRelativeChange", m.min_relative_change),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                errors.add(format!("{base}.{field}"), "must be a non-negative number");
            }
        }
        if m.against == Some(super::Against::SameData) && spec.gates.ct.evaluation.is_none() {
            errors.add(
                format!("{base}.against"),
                "sameData needs spec.gates.ct.evaluation (the step that scores both models)",
            );
        }
        if let Some(r) = m.min_relative_change
            && r > 1.0
        {
            errors.add(
                format!("{base}.minRelativeChange"),
                "must be between 0 and 1, as in MLflow",
            );
        }
        if let Some(t) = m.threshold
            && !t.is_finite()
        {
            errors.add(format!("{base}.threshold"), "must be a finite number");
        }
    }
    if spec.model.is_none() {
        if !spec.gates.ct.metrics.is_empty() {
            errors.add("spec.gates.ct", "judges a model: set spec.model.name");
        }
        if spec.gates.cd.approval == Approval::Manual {
            errors.add("spec.gates.cd", "approves a promotion: set spec.model.name");
        }
    }
}

/// The aliases promotion moves, who may approve it, and the serving target it hands off to.
pub(super) fn promotion(spec: &TrainingPipelineSpec, errors: &mut Errors) {
    let promotion = &spec.promotion;
    for (field, alias) in [
        ("challengerAlias", &promotion.challenger_alias),
        ("championAlias", &promotion.champion_alias),
    ] {
        if let Err(e) = crate::registry::validate_alias(alias) {
            errors.add(format!("spec.promotion.{field}"), e.message);
        }
    }
    if promotion.challenger_alias == promotion.champion_alias {
        errors.add(
            "spec.promotion",
            "the challenger and champion aliases must differ",
        );
    }
    let cd = &spec.gates.cd;
    for (i, approver) in cd.approvers.iter().enumerate() {
        if let Err(e) = crate::auth::validate_username(approver) {
            errors.add(format!("spec.gates.cd.approvers[{i}]"), e.message);
        }
    }
    if !cd.approvers.is_empty() && cd.approval != Approval::Manual {
        errors.add(
            "spec.gates.cd.approvers",
            "name who approves a manual approval: set approval: manual",
        );
    }
    if let Some(shadow) = &cd.shadow {
        shadow_gate(spec, shadow, errors);
    }
    if let Some(serving) = &promotion.serving {
        if spec.model.is_none() {
            errors.add(
                "spec.promotion.serving",
                "serves the champion: set spec.model.name",
            );
        }
        serving.validate(&mut |field, message| errors.add(field, message));
    }
}

/// The shadow criteria: at least one request, criteria in range, a timeout the minimum
/// duration fits in.
fn shadow_gate(spec: &TrainingPipelineSpec, shadow: &ShadowGate, errors: &mut Errors) {
    let base = "spec.gates.cd.shadow";
    if spec.model.is_none() {
        errors.add(base, "shadows the champion: set spec.model.name");
    }
    if shadow.requests == 0 {
        errors.add(format!("{base}.requests"), "must be at least 1");
    }
    if let Some(agreement) = shadow.min_agreement
        && !(0.0..=1.0).contains(&agreement)
    {
        errors.add(format!("{base}.minAgreement"), "must be between 0 and 1");
    }
    if let Some(ratio) = shadow.max_latency_ratio
        && !(ratio.is_finite() && ratio > 0.0)
    {
        errors.add(
            format!("{base}.maxLatencyRatio"),
            "must be a positive number (1.5: at most 1.5 times the champion's p99)",
        );
    }
    for (i, metric) in shadow.metrics.iter().enumerate() {
        if let Err(e) = LiveMetric::parse(&metric.metric) {
            errors.add(format!("{base}.metrics[{i}].metric"), e);
        }
        if metric.min_labels == 0 {
            errors.add(
                format!("{base}.metrics[{i}].minLabels"),
                "must be at least 1",
            );
        }
        if !(metric.max_drop.is_finite() && metric.max_drop >= 0.0) {
            errors.add(
                format!("{base}.metrics[{i}].maxDrop"),
                "must be a number of at least 0",
            );
        }
    }
    if shadow.timeout.0.is_zero() {
        errors.add(format!("{base}.timeout"), "must be longer than zero");
    }
    if let Some(duration) = shadow.duration
        && duration.0 >= shadow.timeout.0
    {
        errors.add(
            format!("{base}.duration"),
            format!(
                "must be shorter than the timeout ({}): the shadow could never finish",
                shadow.timeout
            ),
        );
    }
}
