//! What the controller should do about one `TrainingPipeline`, decided from plain values:
//! the object, what the store holds for it, and the time. No I/O here; `reconcile`
//! gathers the inputs and performs the actions.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use ctflow_core::pipeline::{PipelineDocument, next_scheduled_run};
use ctflow_core::pipeline_run::Phase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use ctflow_kube::crd::{
    LastRun, TrainingPipeline, TrainingPipelineStatus, store_name, store_source,
};

/// The one condition type the status carries: the pipeline is stored and acts on triggers.
pub const READY: &str = "Ready";

/// How often a pipeline's status is refreshed from the store; the store changes without
/// any Kubernetes watch event, so the controller polls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// While a pipeline run is in progress.
    pub active: Duration,
    /// Otherwise (a due schedule tick shortens it).
    pub idle: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            active: Duration::from_secs(5),
            idle: Duration::from_secs(15),
        }
    }
}

/// What the store holds for a pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The stored document and its source (`kubernetes:<ns>/<name>`, `api`, `file:...`).
    pub stored: Option<(PipelineDocument, String)>,
    /// The newest pipeline run.
    pub latest_run: Option<RunView>,
    /// The version the champion alias points at.
    pub champion: Option<i64>,
    /// History entries recorded since the controller last looked, oldest first.
    pub new_history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub id: String,
    pub phase: Phase,
    pub trigger: String,
    pub created_ms: i64,
    pub mlflow_run_id: Option<String>,
}

/// One entry of a pipeline run's history, as the store recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub pipeline_run: String,
    /// Its position in the run's history (0 = the trigger was recorded).
    pub index: usize,
    pub kind: String,
    pub gate: Option<String>,
    pub result: Option<String>,
    pub message: String,
}

/// A Kubernetes Event to publish about the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put the object's spec into the store as the pipeline `document`.
    Store(Box<PipelineDocument>),
    Publish(Note),
    /// Replace the status (server-side apply on the status subresource).
    ApplyStatus(Box<TrainingPipelineStatus>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub requeue_after: Duration,
}

/// Plans a live (not deleting) object.
pub fn plan(
    object: &TrainingPipeline,
    observed: &Observed,
    now: DateTime<Utc>,
    refresh: Refresh,
) -> Plan {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let current = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let document = object.to_document();
    let source = store_source(&namespace, &name);
    let mut actions = Vec::new();

    // Is the spec acceptable, and is the name ours?
    let refusal = match (&observed.stored, document.validate()) {
        (_, Err(errors)) => Some((
            "InvalidSpec",
            errors
                .iter()
                .map(|e| {
                    e.to_string().replacen(
                        "metadata.name",
                        "the pipeline name <namespace>-<name>",
                        1,
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        )),
        (Some((_, other)), Ok(())) if *other != source => Some((
            "NameTaken",
            format!(
                "the store already has a pipeline '{}' from {other}; rename this object or that pipeline",
                document.metadata.name
            ),
        )),
        _ => None,
    };

    let ready = match &refusal {
        Some((reason, message)) => condition(&current, "False", reason, message, generation, now),
        None => condition(
            &current,
            "True",
            "Stored",
            &format!("stored as pipeline '{}'", document.metadata.name),
            generation,
            now,
        ),
    };

    if let Some((reason, message)) = &refusal {
        // NB: once per generation, not at every refresh.
        if current.observed_generation != generation || current.phase.as_deref() != Some("Invalid")
        {
            actions.push(Action::Publish(Note {
                warning: true,
                reason: (*reason).to_string(),
                message: message.clone(),
            }));
        }
    } else if observed.stored.as_ref().map(|(doc, _)| doc) != Some(&document) {
        let verb = if observed.stored.is_some() {
            "updated"
        } else {
            "stored"
        };
        actions.push(Action::Store(Box::new(document.clone())));
        actions.push(Action::Publish(Note {
            warning: false,
            reason: "Stored".into(),
            message: format!(
                "pipeline '{}' {verb} (generation {})",
                document.metadata.name,
                generation.unwrap_or(0)
            ),
        }));
    }

    for entry in &observed.new_history {
        if let Some(note) = note_of(entry) {
            actions.push(Action::Publish(note));
        }
    }
    let champion = observed.champion.map(|v| v.to_string());
    if champion.is_some() && champion != current.champion && refusal.is_none() {
        actions.push(Action::Publish(Note {
            warning: false,
            reason: "Promoted".into(),
            message: format!(
                "champion is now version {} of model '{}'",
                champion.as_deref().unwrap_or_default(),
                object
                    .spec
                    .pipeline
                    .model
                    .as_ref()
                    .map(|m| m.name.as_str())
                    .unwrap_or_default()
            ),
        }));
    }

    let active = observed
        .latest_run
        .as_ref()
        .is_some_and(|run| !run.phase.is_terminal());
    let phase = if refusal.is_some() {
        "Invalid"
    } else {
        match observed.latest_run.as_ref().map(|r| r.phase) {
            Some(Phase::WaitingApproval) => "WaitingApproval",
            Some(Phase::Paused) => "Paused",
            Some(Phase::Shadowing) => "Shadowing",
            Some(p) if !p.is_terminal() => "Running",
            _ if object.spec.pipeline.suspend => "Suspended",
            _ => "Ready",
        }
    };
    let next_run_ms = if refusal.is_none() {
        next_scheduled_run(&object.spec.pipeline, now.timestamp_millis())
    } else {
        None
    };
    let desired = TrainingPipelineStatus {
        phase: Some(phase.into()),
        observed_generation: generation,
        pipeline: refusal.is_none().then(|| document.metadata.name.clone()),
        last_run: observed.latest_run.as_ref().map(|run| LastRun {
            id: run.id.clone(),
            phase: run.phase.as_str().into(),
            trigger: run.trigger.clone(),
            time: rfc3339(run.created_ms),
            mlflow_run_id: run.mlflow_run_id.clone(),
        }),
        next_run: next_run_ms.map(rfc3339),
        champion,
        conditions: vec![ready],
    };
    if desired != current {
        actions.push(Action::ApplyStatus(Box::new(desired)));
    }

    let mut requeue_after = if active { refresh.active } else { refresh.idle };
    if let Some(due) = next_run_ms {
        let until = Duration::from_millis((due - now.timestamp_millis()).max(0) as u64)
            + Duration::from_secs(1);
        requeue_after = requeue_after.min(until);
    }
    Plan {
        actions,
        requeue_after,
    }
}

/// What deleting the object does to the store: the unfinished runs to cancel, and
/// whether the pipeline is ours to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub cancel: Vec<String>,
    pub delete_pipeline: Option<String>,
    pub note: Note,
}

pub fn plan_cleanup(
    object: &TrainingPipeline,
    stored_source: Option<&str>,
    unfinished_runs: &[String],
) -> Cleanup {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let ours = stored_source == Some(store_source(&namespace, &name).as_str());
    let pipeline = store_name(&namespace, &name);
    let cancel = if ours {
        unfinished_runs.to_vec()
    } else {
        Vec::new()
    };
    let message = if ours {
        format!(
            "pipeline '{pipeline}' deleted; {} unfinished run(s) canceled; its history stays in the store",
            cancel.len()
        )
    } else {
        format!("nothing stored under '{pipeline}' belongs to this object")
    };
    Cleanup {
        cancel,
        delete_pipeline: ours.then_some(pipeline),
        note: Note {
            warning: false,
            reason: "Deleted".into(),
            message,
        },
    }
}

/// The Kubernetes Event for a history entry, if it is one users care about: the trigger,
/// gate decisions, and how the run ended.
fn note_of(entry: &HistoryEntry) -> Option<Note> {
    let run = &entry.pipeline_run;
    if entry.index == 0 {
        return Some(Note {
            warning: false,
            reason: "Triggered".into(),
            message: format!("pipeline run {run}: {}", entry.message),
        });
    }
    match entry.kind.as_str() {
        "gate" => {
            let gate = entry.gate.as_deref().unwrap_or("gate");
            let result = entry.result.as_deref().unwrap_or("decided");
            let warning = matches!(result, "fail" | "failed" | "rejected" | "error");
            Some(Note {
                warning,
                reason: format!("Gate{}", camel(result)),
                message: format!(
                    "pipeline run {run}: {gate} gate {result}: {}",
                    entry.message
                ),
            })
        }
        "phase" => {
            // "Evaluating -> Succeeded: decision": only the endings become Events.
            let (_, to) = entry.message.split_once(" -> ")?;
            let phase: Phase = to.split(':').next()?.trim().parse().ok()?;
            if !phase.is_terminal() {
                return None;
            }
            Some(Note {
                warning: matches!(phase, Phase::Failed | Phase::GateFailed | Phase::Rejected),
                reason: format!("Run{}", phase.as_str()),
                message: format!("pipeline run {run}: {}", entry.message),
            })
        }
        _ => None,
    }
}

fn camel(word: &str) -> String {
    word.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A condition, keeping its transition time while its status stays the same.
fn condition(
    current: &TrainingPipelineStatus,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let previous = current.conditions.iter().find(|c| c.type_ == READY);
    let since = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff_of(now)),
    };
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn jiff_of(time: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    // NB: Kubernetes times have whole seconds on the wire.
    k8s_openapi::jiff::Timestamp::from_second(time.timestamp()).unwrap_or_default()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ctflow_core::pipeline::PipelineDocument;
    use ctflow_kube::crd::PipelineResourceSpec;

    const SPEC: &str = r#"
apiVersion: ctflow.dev/v1alpha1
kind: TrainingPipeline
metadata: { name: iris }
spec:
  project: { uri: "https://github.com/acme/iris.git", entryPoint: main, image: "acme/iris:1" }
  model: { name: iris-classifier }
  triggers:
    - schedule: { cron: "0 3 * * *", timezone: UTC }
"#;

    fn object(generation: i64) -> TrainingPipeline {
        let doc = PipelineDocument::from_yaml(SPEC).expect("the sample parses");
        let mut object = TrainingPipeline::new("iris", PipelineResourceSpec { pipeline: doc.spec });
        object.metadata.namespace = Some("ml".into());
        object.metadata.generation = Some(generation);
        object
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 1, 0, 0)
            .single()
            .expect("a valid time")
    }

    fn stored(object: &TrainingPipeline) -> Observed {
        Observed {
            stored: Some((object.to_document(), "kubernetes:ml/iris".into())),
            ..Observed::default()
        }
    }

    fn status_of(plan: &Plan) -> Option<&TrainingPipelineStatus> {
        plan.actions.iter().find_map(|a| match a {
            Action::ApplyStatus(s) => Some(s.as_ref()),
            _ => None,
        })
    }

    fn reasons(plan: &Plan) -> Vec<&str> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish(note) => Some(note.reason.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_object_is_stored_under_namespace_dash_name() {
        let object = object(1);
        let plan = plan(&object, &Observed::default(), now(), Refresh::default());
        let Some(Action::Store(document)) = plan.actions.first() else {
            panic!("the first action stores the pipeline: {:?}", plan.actions);
        };
        assert_eq!(document.metadata.name, "ml-iris");
        assert_eq!(document.spec, object.spec.pipeline);
        assert_eq!(reasons(&plan), vec!["Stored"]);
        let status = status_of(&plan).expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Ready"));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.pipeline.as_deref(), Some("ml-iris"));
        assert_eq!(status.next_run.as_deref(), Some("2026-11-26T03:00:00Z"));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, "Stored");
    }

    #[test]
    fn an_unchanged_object_with_its_status_needs_nothing() {
        let object = object(1);
        let first = plan(&object, &stored(&object), now(), Refresh::default());
        let mut settled = object.clone();
        settled.status = status_of(&first).cloned();
        let again = plan(&settled, &stored(&settled), now(), Refresh::default());
        assert_eq!(again.actions, vec![], "nothing to store, publish or apply");
        // The schedule is due at 03:00, two hours away: the idle refresh comes first.
        assert_eq!(again.requeue_after, Refresh::default().idle);
    }

    #[test]
    fn a_due_schedule_shortens_the_refresh() {
        let object = object(1);
        let soon = Utc
            .with_ymd_and_hms(2026, 11, 26, 2, 59, 50)
            .single()
            .expect("a valid time");
        let plan = plan(&object, &stored(&object), soon, Refresh::default());
        assert_eq!(plan.requeue_after, Duration::from_secs(11));
    }

    #[test]
    fn a_spec_change_updates_the_store_and_keeps_the_transition_time() {
        let object = object(1);
        let first = plan(&object, &stored(&object), now(), Refresh::default());
        let mut changed = object.clone();
        changed.status = status_of(&first).cloned();
        changed.metadata.generation = Some(2);
        changed
            .spec
            .pipeline
            .project
            .parameters
            .insert("C".into(), "0.1".into());
        let later = now() + chrono::Duration::hours(1);
        let plan = plan(&changed, &stored(&object), later, Refresh::default());
        assert!(
            matches!(&plan.actions[0], Action::Store(d) if d.spec.project.parameters["C"] == "0.1")
        );
        let status = status_of(&plan).expect("observedGeneration moves");
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            status.conditions[0].last_transition_time,
            first_condition_time(&first),
            "Ready stayed True, so its transition time stays"
        );
    }

    fn first_condition_time(plan: &Plan) -> Time {
        status_of(plan).expect("a status").conditions[0]
            .last_transition_time
            .clone()
    }

    #[test]
    fn an_invalid_spec_is_refused_once_per_generation() {
        let mut object = object(3);
        object.spec.pipeline.triggers = vec![ctflow_core::pipeline::Trigger::Schedule(
            ctflow_core::pipeline::ScheduleTrigger {
                cron: "not a cron".into(),
                timezone: "UTC".into(),
                catch_up: Default::default(),
                max_runs: 1,
                starting_deadline: None,
            },
        )];
        let plan_1 = plan(&object, &Observed::default(), now(), Refresh::default());
        assert!(!plan_1.actions.iter().any(|a| matches!(a, Action::Store(_))));
        let status = status_of(&plan_1).expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Invalid"));
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.conditions[0].reason, "InvalidSpec");
        assert!(
            status.conditions[0].message.contains("spec.triggers[0]"),
            "{}",
            status.conditions[0].message
        );
        assert_eq!(status.next_run, None);
        assert_eq!(reasons(&plan_1), vec!["InvalidSpec"]);
        let mut reported = object.clone();
        reported.status = Some(status.clone());
        let plan_2 = plan(&reported, &Observed::default(), now(), Refresh::default());
        assert_eq!(
            plan_2.actions,
            vec![],
            "no second Warning for the same generation"
        );
    }

    #[test]
    fn a_name_too_long_for_a_pipeline_is_refused_with_the_reason() {
        let mut object = object(1);
        object.metadata.name = Some("x".repeat(61));
        let plan = plan(&object, &Observed::default(), now(), Refresh::default());
        let status = status_of(&plan).expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Invalid"));
        assert!(
            status.conditions[0].message.contains("<namespace>-<name>"),
            "{}",
            status.conditions[0].message
        );
    }

    #[test]
    fn a_name_held_by_another_source_is_not_overwritten() {
        let object = object(1);
        let observed = Observed {
            stored: Some((object.to_document(), "api".into())),
            ..Observed::default()
        };
        let plan = plan(&object, &observed, now(), Refresh::default());
        assert!(!plan.actions.iter().any(|a| matches!(a, Action::Store(_))));
        assert_eq!(reasons(&plan), vec!["NameTaken"]);
        assert_eq!(
            status_of(&plan).and_then(|s| s.phase.as_deref()),
            Some("Invalid")
        );
    }

    #[test]
    fn runs_champion_and_history_show_in_status_and_events() {
        let object = object(1);
        let mut observed = stored(&object);
        observed.latest_run = Some(RunView {
            id: "7".into(),
            phase: Phase::Running,
            trigger: "manual".into(),
            created_ms: now().timestamp_millis(),
            mlflow_run_id: Some("abc".into()),
        });
        observed.champion = Some(4);
        observed.new_history = vec![
            HistoryEntry {
                pipeline_run: "7".into(),
                index: 0,
                kind: "phase".into(),
                gate: None,
                result: None,
                message: "manual trigger recorded".into(),
            },
            HistoryEntry {
                pipeline_run: "7".into(),
                index: 1,
                kind: "attempt".into(),
                gate: None,
                result: None,
                message: "attempt 1 queued".into(),
            },
            HistoryEntry {
                pipeline_run: "7".into(),
                index: 2,
                kind: "phase".into(),
                gate: None,
                result: None,
                message: "Pending -> Queued".into(),
            },
            HistoryEntry {
                pipeline_run: "7".into(),
                index: 3,
                kind: "gate".into(),
                gate: Some("ct".into()),
                result: Some("failed".into()),
                message: "accuracy 0.5 < 0.9".into(),
            },
            HistoryEntry {
                pipeline_run: "7".into(),
                index: 4,
                kind: "phase".into(),
                gate: None,
                result: None,
                message: "Evaluating -> GateFailed: the CT gate failed".into(),
            },
        ];
        let plan = plan(&object, &observed, now(), Refresh::default());
        assert_eq!(
            reasons(&plan),
            vec!["Triggered", "GateFailed", "RunGateFailed", "Promoted"]
        );
        let warnings: Vec<bool> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish(n) => Some(n.warning),
                _ => None,
            })
            .collect();
        assert_eq!(warnings, vec![false, true, true, false]);
        let status = status_of(&plan).expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.champion.as_deref(), Some("4"));
        let last = status.last_run.as_ref().expect("the last run");
        assert_eq!(
            (last.id.as_str(), last.phase.as_str(), last.trigger.as_str()),
            ("7", "Running", "manual")
        );
        assert_eq!(last.time, "2026-11-26T01:00:00Z");
        assert_eq!(plan.requeue_after, Refresh::default().active);
    }

    #[test]
    fn waiting_and_suspended_phases() {
        let object = object(1);
        let mut observed = stored(&object);
        observed.latest_run = Some(RunView {
            id: "1".into(),
            phase: Phase::WaitingApproval,
            trigger: "data".into(),
            created_ms: 0,
            mlflow_run_id: None,
        });
        assert_eq!(
            status_of(&plan(&object, &observed, now(), Refresh::default()))
                .and_then(|s| s.phase.clone())
                .as_deref(),
            Some("WaitingApproval")
        );
        let mut suspended = object.clone();
        suspended.spec.pipeline.suspend = true;
        observed.stored = Some((suspended.to_document(), "kubernetes:ml/iris".into()));
        observed.latest_run = Some(RunView {
            id: "1".into(),
            phase: Phase::Succeeded,
            trigger: "data".into(),
            created_ms: 0,
            mlflow_run_id: None,
        });
        let status = status_of(&plan(&suspended, &observed, now(), Refresh::default()))
            .cloned()
            .expect("a status");
        assert_eq!(status.phase.as_deref(), Some("Suspended"));
        assert_eq!(
            status.next_run, None,
            "a suspended pipeline has no next run"
        );
    }

    #[test]
    fn cleanup_cancels_and_deletes_only_what_is_ours() {
        let object = object(1);
        let ours = plan_cleanup(
            &object,
            Some("kubernetes:ml/iris"),
            &["3".into(), "4".into()],
        );
        assert_eq!(ours.cancel, vec!["3".to_string(), "4".to_string()]);
        assert_eq!(ours.delete_pipeline.as_deref(), Some("ml-iris"));
        assert!(ours.note.message.contains("2 unfinished run(s) canceled"));
        let theirs = plan_cleanup(&object, Some("api"), &["3".into()]);
        assert_eq!(theirs.cancel, Vec::<String>::new());
        assert_eq!(theirs.delete_pipeline, None);
        let nothing = plan_cleanup(&object, None, &[]);
        assert_eq!(nothing.delete_pipeline, None);
    }

    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(camel("passed"), "Passed");
        assert_eq!(camel("waiting-approval"), "WaitingApproval");
        assert_eq!(camel(""), "");
    }
}
