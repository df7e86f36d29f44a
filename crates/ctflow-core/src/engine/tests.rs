use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::pipeline::TrainingPipelineSpec;
use crate::pipeline_run::Approval;
use crate::trigger::TriggerEvent;

const NOW: i64 = 1_000_000;
const USER: &str = "ctflow";

/// A spec from the JSON a pipeline file would hold, over a minimal one with a model, a CT
/// gate on `accuracy >= 0.8` and no retries.
fn spec(overrides: serde_json::Value) -> TrainingPipelineSpec {
    let mut base = json!({
        "project": {"uri": "."},
        "model": {"name": "iris"},
        "gates": {"ct": {"metrics": [{"metric": "accuracy", "threshold": 0.8}]}},
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), overrides.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    match serde_json::from_value(base) {
        Ok(spec) => spec,
        Err(error) => panic!("test spec: {error}"),
    }
}

fn run(id: &str, phase: Phase, attempt: i64, spec: TrainingPipelineSpec) -> PipelineRun {
    PipelineRun {
        id: id.to_string(),
        pipeline: "p".into(),
        trigger: serde_json::from_value::<TriggerEvent>(
            json!({"pipeline": "p", "kind": "manual", "dedupe_key": id}),
        )
        .unwrap_or_else(|e| panic!("trigger: {e}")),
        phase,
        attempt,
        not_before: None,
        run_id: None,
        model_version: None,
        decision: None,
        worker_pid: None,
        approval_deadline: None,
        shadow: None,
        approval: None,
        creation_time: 0,
        start_time: None,
        end_time: None,
        last_updated_time: 0,
        spec,
        base_dir: ".".into(),
        snapshot_id: None,
    }
}

fn policy(name: &str) -> TrainingPipelineSpec {
    spec(json!({"concurrencyPolicy": name}))
}

fn moves(steps: &[Step]) -> Vec<&Move> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Move(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn only_move(steps: &[Step]) -> &Move {
    let all = moves(steps);
    assert_eq!(all.len(), 1, "{steps:#?}");
    all[0]
}

fn decision(m: &Move) -> Option<&str> {
    m.changes.iter().find_map(|c| match c {
        Change::Decision(d) => d.as_deref(),
        _ => None,
    })
}

fn applied(mut observed: PipelineRun, m: &Move) -> PipelineRun {
    assert!(
        m.from.contains(&observed.phase),
        "{m:?} from {}",
        observed.phase
    );
    m.apply(&mut observed);
    observed
}

fn finished(attempt: i64, status: JobStatus) -> JobEvent {
    JobEvent::Finished {
        pipeline_run: "r".into(),
        attempt,
        status,
        run_id: Some("mlflow-run".into()),
        message: format!("job {}", status.as_label()),
        ci: Vec::new(),
    }
}

fn inputs(accuracy: Option<f64>, champion: Option<(i64, f64)>) -> GateInputs {
    GateInputs {
        version: 2,
        run_id: "mlflow-run".into(),
        metrics: accuracy
            .map(|a| HashMap::from([("accuracy".to_string(), a)]))
            .unwrap_or_default(),
        champion: champion.map(|(version, accuracy)| Champion {
            version,
            run_id: "champion-run".into(),
            metrics: HashMap::from([("accuracy".to_string(), accuracy)]),
        }),
        same_data: None,
    }
}

// ---- admission ----

#[test]
fn a_first_attempt_is_queued_with_its_job() {
    let steps = admit_pending(&[run("a", Phase::Pending, 0, policy("Forbid"))], NOW);
    let m = only_move(&steps);
    assert_eq!(
        (m.from.as_slice(), m.to),
        (&[Phase::Pending][..], Phase::Queued)
    );
    assert_eq!(m.then, Some(Effect::QueueJob));
    let after = applied(run("a", Phase::Pending, 0, policy("Forbid")), m);
    assert_eq!((after.attempt, after.start_time), (1, Some(NOW)));
    assert_eq!(
        m.event.as_ref().map(|e| e.message.as_str()),
        Some("attempt 1 queued")
    );
}

#[test]
fn forbid_skips_a_trigger_while_a_run_is_active() {
    let runs = [
        run("a", Phase::Running, 1, policy("Forbid")),
        run("b", Phase::Pending, 0, policy("Forbid")),
    ];
    let m = only_move(&admit_pending(&runs, NOW)).clone();
    assert_eq!((m.run.as_str(), m.to), ("b", Phase::Skipped));
    assert_eq!(
        decision(&m),
        Some("not started: pipeline run a was still active (concurrencyPolicy Forbid)")
    );
}

#[test]
fn enqueue_waits_and_keeps_the_order() {
    let runs = [
        run("a", Phase::Evaluating, 1, policy("Enqueue")),
        run("b", Phase::Pending, 0, policy("Enqueue")),
        run("c", Phase::Pending, 0, policy("Enqueue")),
    ];
    assert!(admit_pending(&runs, NOW).is_empty());
    // Once the active run ended, the oldest waiting one goes first and alone.
    let steps = admit_pending(&runs[1..], NOW);
    let m = only_move(&steps);
    assert_eq!((m.run.as_str(), m.to), ("b", Phase::Queued));
}

#[test]
fn replace_cancels_the_active_runs_then_starts() {
    let runs = [
        run("a", Phase::Running, 1, policy("Replace")),
        run("b", Phase::WaitingApproval, 1, policy("Replace")),
        run("c", Phase::Pending, 0, policy("Replace")),
    ];
    let steps = admit_pending(&runs, NOW);
    let all = moves(&steps);
    assert_eq!(all.len(), 3);
    for (m, id) in all.iter().zip(["a", "b"]) {
        assert_eq!((m.run.as_str(), m.to), (id, Phase::Canceled));
        assert_eq!(m.from, UNFINISHED_PHASES);
        assert_eq!(m.then, Some(Effect::StopJob));
        assert_eq!(
            decision(m),
            Some("replaced by pipeline run c (concurrencyPolicy Replace)")
        );
    }
    assert_eq!((all[2].run.as_str(), all[2].to), ("c", Phase::Queued));
}

#[test]
fn allow_starts_every_trigger() {
    let runs = [
        run("a", Phase::Running, 1, policy("Allow")),
        run("b", Phase::Pending, 0, policy("Allow")),
        run("c", Phase::Pending, 0, policy("Allow")),
    ];
    let steps = admit_pending(&runs, NOW);
    let started: Vec<&str> = moves(&steps).iter().map(|m| m.run.as_str()).collect();
    assert_eq!(started, ["b", "c"]);
}

#[test]
fn a_retry_waits_out_its_backoff_and_keeps_its_slot() {
    let mut retry = run("a", Phase::Pending, 1, policy("Forbid"));
    retry.not_before = Some(NOW + 1);
    let new = run("b", Phase::Pending, 0, policy("Forbid"));
    let steps = admit_pending(&[retry.clone(), new.clone()], NOW);
    // The retry is not due; the new trigger still sees it as active.
    let m = only_move(&steps);
    assert_eq!((m.run.as_str(), m.to), ("b", Phase::Skipped));
    retry.not_before = Some(NOW);
    let steps = admit_pending(&[retry], NOW);
    let m = only_move(&steps);
    assert_eq!((m.run.as_str(), m.to), ("a", Phase::Queued));
    assert!(m.changes.contains(&Change::Attempt(2)));
    assert!(m.changes.contains(&Change::NotBefore(None)));
}

// ---- job reports ----

#[test]
fn a_started_job_is_running_with_its_mlflow_run() {
    let queued = run("r", Phase::Queued, 1, spec(json!({})));
    let started = JobEvent::Started {
        pipeline_run: "r".into(),
        attempt: 1,
        run_id: "abc".into(),
    };
    let after = applied(
        queued.clone(),
        only_move(&on_report(&queued, &started, NOW)),
    );
    assert_eq!(
        (after.phase, after.run_id.as_deref()),
        (Phase::Running, Some("abc"))
    );
    let process = JobEvent::Process {
        pipeline_run: "r".into(),
        attempt: 1,
        pid: 42,
    };
    let after = applied(after.clone(), only_move(&on_report(&after, &process, NOW)));
    assert_eq!(after.worker_pid, Some(42));
}

#[test]
fn a_report_for_an_earlier_attempt_changes_nothing() {
    let current = run("r", Phase::Running, 2, spec(json!({})));
    for status in [JobStatus::Succeeded, JobStatus::Failed, JobStatus::CiFailed] {
        assert!(on_report(&current, &finished(1, status), NOW).is_empty());
    }
    let late = JobEvent::Started {
        pipeline_run: "r".into(),
        attempt: 1,
        run_id: "old".into(),
    };
    assert!(on_report(&current, &late, NOW).is_empty());
}

#[test]
fn a_finish_after_the_run_moved_on_changes_nothing() {
    for phase in [Phase::Evaluating, Phase::Canceled, Phase::Pending] {
        let moved_on = run("r", phase, 1, spec(json!({})));
        assert!(on_report(&moved_on, &finished(1, JobStatus::Succeeded), NOW).is_empty());
    }
}

#[test]
fn each_job_status_ends_the_attempt_its_way() {
    let with_model = run("r", Phase::Running, 1, spec(json!({})));
    let mut without_model = with_model.clone();
    without_model.spec.model = None;
    let cases = [
        (&with_model, JobStatus::Succeeded, Phase::Evaluating, None),
        (
            &without_model,
            JobStatus::Succeeded,
            Phase::Succeeded,
            Some("trained; the pipeline has no model to promote"),
        ),
        (
            &with_model,
            JobStatus::CiFailed,
            Phase::GateFailed,
            Some("job ci_failed"),
        ),
        (
            &with_model,
            JobStatus::TimedOut,
            Phase::Failed,
            Some("job timed_out"),
        ),
        (
            &with_model,
            JobStatus::Unschedulable,
            Phase::Failed,
            Some("job unschedulable"),
        ),
        (
            &with_model,
            JobStatus::Failed,
            Phase::Failed,
            Some("job failed (attempt 1 of 1)"),
        ),
    ];
    for (observed, status, phase, why) in cases {
        let steps = on_report(observed, &finished(1, status), NOW);
        let m = only_move(&steps);
        let after = applied(observed.clone(), m);
        assert_eq!(after.phase, phase, "{status:?}");
        assert_eq!(after.decision.as_deref(), why, "{status:?}");
        assert_eq!(after.run_id.as_deref(), Some("mlflow-run"));
        assert_eq!(after.worker_pid, None);
    }
    assert!(on_report(&with_model, &finished(1, JobStatus::Canceled), NOW).is_empty());
}

#[test]
fn ci_results_are_recorded_before_the_move() {
    let observed = run(
        "r",
        Phase::Running,
        1,
        spec(json!({"gates": {"ci": {"dryRun": true}}})),
    );
    let report = JobEvent::Finished {
        pipeline_run: "r".into(),
        attempt: 1,
        status: JobStatus::Succeeded,
        run_id: None,
        message: String::new(),
        ci: vec![CiResult {
            name: "lint".into(),
            command: "ruff".into(),
            exit_code: Some(1),
            passed: false,
            output_tail: String::new(),
            duration_ms: 5,
        }],
    };
    let steps = on_report(&observed, &report, NOW);
    let Some(Step::Record { event, .. }) = steps.first() else {
        panic!("{steps:#?}");
    };
    assert_eq!(event.gate.as_deref(), Some("ci"));
    assert_eq!(event.result.as_deref(), Some("fail"));
    assert_eq!(
        event.message,
        "CI failed: 'lint' exited with 1 (dry run: not blocking)"
    );
    assert_eq!(only_move(&steps).to, Phase::Evaluating);
}

#[test]
fn a_failure_is_retried_with_growing_backoff_then_fails() {
    let retrying = spec(json!({"retry": {"limit": 2, "backoff": "10s", "factor": 3}}));
    let first = run("r", Phase::Running, 1, retrying.clone());
    let m = only_move(&on_report(&first, &finished(1, JobStatus::Failed), NOW)).clone();
    let after = applied(first, &m);
    assert_eq!(
        (after.phase, after.not_before),
        (Phase::Pending, Some(NOW + 10_000))
    );
    assert_eq!(
        m.event.map(|e| e.message),
        Some("attempt 1 failed: job failed; retrying in 10s".into())
    );
    let second = run("r", Phase::Running, 2, retrying.clone());
    let after = applied(
        second.clone(),
        only_move(&on_report(&second, &finished(2, JobStatus::Failed), NOW)),
    );
    assert_eq!(after.not_before, Some(NOW + 30_000));
    let last = run("r", Phase::Running, 3, retrying);
    let after = applied(
        last.clone(),
        only_move(&on_report(&last, &finished(3, JobStatus::Failed), NOW)),
    );
    assert_eq!(after.phase, Phase::Failed);
    assert_eq!(
        after.decision.as_deref(),
        Some("job failed (attempt 3 of 3)")
    );
}

// ---- the CT gate ----

#[test]
fn evaluation_without_a_model_or_a_run_ends_at_once() {
    let mut no_model = run("r", Phase::Evaluating, 1, spec(json!({})));
    no_model.spec.model = None;
    let Evaluation::Decided(m) = begin_evaluation(&no_model) else {
        panic!("no model: nothing to find");
    };
    assert_eq!(m.to, Phase::Succeeded);
    let no_run = run("r", Phase::Evaluating, 1, spec(json!({})));
    let Evaluation::Decided(m) = begin_evaluation(&no_run) else {
        panic!("no run: nothing to find");
    };
    assert_eq!(
        (m.to, decision(&m)),
        (Phase::GateFailed, Some("the job recorded no MLflow run"))
    );
    let mut trained = no_run;
    trained.run_id = Some("abc".into());
    assert_eq!(
        begin_evaluation(&trained),
        Evaluation::FindCandidate {
            model: "iris".into(),
            logged_model: "model".into(),
            run_id: "abc".into()
        }
    );
    let m = no_candidate(&trained, "abc");
    assert_eq!(
        (m.to, decision(&m)),
        (
            Phase::GateFailed,
            Some("run abc registered no version of 'iris' and logged no model named 'model'")
        )
    );
}

#[test]
fn the_first_champion_needs_only_the_thresholds() {
    let observed = run("r", Phase::Evaluating, 1, spec(json!({})));
    let steps = judge(&observed, &inputs(Some(0.9), None), USER, NOW);
    let Some(Step::Record { event, .. }) = steps.first() else {
        panic!("{steps:#?}");
    };
    assert_eq!(
        (event.gate.as_deref(), event.result.as_deref()),
        (Some("ct"), Some("pass"))
    );
    assert_eq!(
        event.message,
        "version 2 passed (no champion yet: thresholds only)"
    );
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::Succeeded);
    assert_eq!(decision(m), Some("version 2 is the first champion"));
    let aliases: Vec<(&str, Option<&str>, &str)> = m
        .promotions
        .iter()
        .map(|p| (p.alias.as_str(), p.stage.as_deref(), p.user.as_str()))
        .collect();
    assert_eq!(
        aliases,
        [
            ("challenger", Some("Staging"), USER),
            ("champion", Some("Production"), USER)
        ]
    );
}

#[test]
fn a_better_candidate_replaces_the_champion_and_a_worse_one_does_not() {
    let observed = run(
        "r",
        Phase::Evaluating,
        1,
        spec(
            json!({"gates": {"ct": {"metrics": [{"metric": "accuracy", "minAbsoluteChange": 0.01}]}}}),
        ),
    );
    let better = judge(&observed, &inputs(Some(0.95), Some((1, 0.9))), USER, NOW);
    assert_eq!(
        decision(only_move(&better)),
        Some("version 2 is the champion (was version 1)")
    );
    let worse = judge(&observed, &inputs(Some(0.905), Some((1, 0.9))), USER, NOW);
    let m = only_move(&worse);
    assert_eq!((m.to, m.promotions.len()), (Phase::GateFailed, 0));
    assert!(m.changes.contains(&Change::ModelVersion(2)));
    let why = decision(m).unwrap_or_default();
    assert!(
        why.starts_with("CT gate: accuracy = 0.905, needs >= 0.91"),
        "{why}"
    );
}

#[test]
fn the_champion_itself_is_not_judged_again() {
    let observed = run("r", Phase::Evaluating, 1, spec(json!({})));
    let steps = judge(&observed, &inputs(Some(0.1), Some((2, 0.9))), USER, NOW);
    let m = only_move(&steps);
    assert_eq!(
        (m.to, decision(m)),
        (Phase::Succeeded, Some("version 2 is already the champion"))
    );
}

#[test]
fn missing_numbers_follow_the_insufficient_data_policy() {
    let with = |policy: &str| {
        spec(json!({"gates": {"ct": {
            "metrics": [{"metric": "accuracy", "threshold": 0.8}],
            "onInsufficientData": policy,
        }}}))
    };
    let judged = |policy: &str| {
        let observed = run("r", Phase::Evaluating, 1, with(policy));
        judge(&observed, &inputs(None, None), USER, NOW)
    };
    let failed = judged("fail");
    assert_eq!(only_move(&failed).to, Phase::GateFailed);
    let passed = judged("pass");
    assert_eq!(only_move(&passed).to, Phase::Succeeded);
    let paused = judged("pause");
    let m = only_move(&paused);
    assert_eq!(m.to, Phase::Paused);
    // The default CD timeout (7 days) is the deadline for a person's answer.
    assert!(
        m.changes
            .contains(&Change::ApprovalDeadline(NOW + 7 * 24 * 3600 * 1000))
    );
    assert!(m.changes.contains(&Change::ClearApproval));
    assert_eq!(
        m.event.as_ref().and_then(|e| e.result.as_deref()),
        Some("inconclusive")
    );
}

#[test]
fn a_dry_run_gate_records_its_no_and_goes_on() {
    let observed = run(
        "r",
        Phase::Evaluating,
        1,
        spec(
            json!({"gates": {"ct": {"metrics": [{"metric": "accuracy", "threshold": 0.8}], "dryRun": true}}}),
        ),
    );
    let steps = judge(&observed, &inputs(Some(0.5), None), USER, NOW);
    let Some(Step::Record { event, .. }) = steps.first() else {
        panic!("{steps:#?}");
    };
    assert_eq!(event.result.as_deref(), Some("fail"));
    assert!(
        event.message.ends_with("(dry run: not blocking)"),
        "{}",
        event.message
    );
    assert_eq!(only_move(&steps).to, Phase::Succeeded);
}

#[test]
fn manual_approval_makes_a_challenger_and_waits() {
    let observed = run(
        "r",
        Phase::Evaluating,
        1,
        spec(json!({"gates": {
            "ct": {"metrics": [{"metric": "accuracy", "threshold": 0.8}]},
            "cd": {"approval": "manual", "timeout": "1h"},
        }})),
    );
    let steps = judge(&observed, &inputs(Some(0.9), None), USER, NOW);
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::WaitingApproval);
    let aliases: Vec<&str> = m.promotions.iter().map(|p| p.alias.as_str()).collect();
    assert_eq!(aliases, ["challenger"]);
    assert!(
        m.changes
            .contains(&Change::ApprovalDeadline(NOW + 3_600_000))
    );
    assert_eq!(
        m.event.as_ref().and_then(|e| e.result.as_deref()),
        Some("waiting")
    );
    // In dry run the wait is only recorded: the candidate is promoted at once.
    let mut dry = observed.clone();
    dry.spec.gates.cd.dry_run = true;
    let steps = judge(&dry, &inputs(Some(0.9), None), USER, NOW);
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::Succeeded);
    assert_eq!(
        m.event.as_ref().map(|e| e.message.as_str()),
        Some("dry run: would have waited for approval; promoted")
    );
}

#[test]
fn stages_are_left_alone_when_the_pipeline_says_so() {
    let observed = run(
        "r",
        Phase::Evaluating,
        1,
        spec(json!({"promotion": {"stages": false, "championAlias": "prod"}})),
    );
    let steps = judge(&observed, &inputs(Some(0.9), None), USER, NOW);
    let m = only_move(&steps);
    assert!(m.promotions.iter().all(|p| p.stage.is_none()));
    assert_eq!(m.promotions[1].alias, "prod");
}

// ---- answers and their deadline ----

fn waiting(phase: Phase, approval: Option<(bool, &str)>, deadline: i64) -> PipelineRun {
    let mut r = run(
        "r",
        phase,
        1,
        spec(json!({"gates": {"cd": {"approval": "manual"}}})),
    );
    r.model_version = Some(2);
    r.approval_deadline = Some(deadline);
    r.approval = approval.map(|(approved, user)| Approval {
        approved,
        user: user.into(),
    });
    r
}

#[test]
fn an_approval_moves_the_champion_as_the_approver() {
    let observed = waiting(Phase::WaitingApproval, Some((true, "alice")), NOW + 1);
    assert_eq!(answer_needs_champion(&observed), Some(("iris", "champion")));
    let m = answer(&observed, Some(1), USER, NOW).unwrap_or_else(|| panic!("a move"));
    let after = applied(observed, &m);
    assert_eq!(after.phase, Phase::Succeeded);
    assert_eq!(
        after.decision.as_deref(),
        Some("approved by alice; version 2 is the champion (was version 1)")
    );
    assert_eq!(after.approval, None);
    assert_eq!(m.promotions.len(), 1);
    assert_eq!(
        (
            m.promotions[0].alias.as_str(),
            m.promotions[0].user.as_str()
        ),
        ("champion", "alice")
    );
}

#[test]
fn a_rejection_or_the_deadline_rejects() {
    let rejected = waiting(Phase::WaitingApproval, Some((false, "bob")), NOW + 1);
    assert_eq!(answer_needs_champion(&rejected), None);
    let m = answer(&rejected, None, USER, NOW).unwrap_or_else(|| panic!("a move"));
    assert_eq!(
        (m.to, decision(&m)),
        (Phase::Rejected, Some("rejected by bob"))
    );
    let late = waiting(Phase::Paused, None, NOW);
    let m = answer(&late, None, USER, NOW).unwrap_or_else(|| panic!("a move"));
    assert_eq!(
        (m.to, decision(&m)),
        (
            Phase::Rejected,
            Some("no answer before the approval timeout")
        )
    );
    assert_eq!(
        answer(
            &waiting(Phase::WaitingApproval, None, NOW + 1),
            None,
            USER,
            NOW
        ),
        None
    );
}

#[test]
fn an_approval_without_a_candidate_fails() {
    let mut observed = waiting(Phase::WaitingApproval, Some((true, "alice")), NOW + 1);
    observed.model_version = None;
    let m = answer(&observed, None, USER, NOW).unwrap_or_else(|| panic!("a move"));
    assert_eq!(
        (m.to, decision(&m)),
        (
            Phase::Failed,
            Some("approved by alice, but the run has no candidate version")
        )
    );
}

#[test]
fn letting_a_paused_run_go_on_passes_it_to_the_cd_gate() {
    let mut observed = waiting(Phase::Paused, Some((true, "alice")), NOW + 1);
    // Manual CD: the paused run becomes the challenger and waits again.
    let m = answer(&observed, None, USER, NOW).unwrap_or_else(|| panic!("a move"));
    assert_eq!(
        (m.from.as_slice(), m.to),
        (&[Phase::Paused][..], Phase::WaitingApproval)
    );
    assert!(m.changes.contains(&Change::ClearApproval));
    // Automatic CD: it is promoted.
    observed.spec.gates.cd.approval = ApprovalMode::Auto;
    let m = answer(&observed, Some(1), USER, NOW).unwrap_or_else(|| panic!("a move"));
    assert_eq!(m.to, Phase::Succeeded);
    assert_eq!(
        decision(&m),
        Some("version 2 is the champion (was version 1)")
    );
}

// ---- recovery ----

#[test]
fn a_restart_queues_again_what_was_queued() {
    let queued = run("r", Phase::Queued, 1, spec(json!({})));
    let steps = recover(&queued, true, NOW);
    assert!(matches!(&steps[..], [Step::Record { .. }, Step::Requeue { run }] if run == "r"));
}

#[test]
fn a_restart_fails_the_attempt_its_in_process_worker_lost() {
    let mut running = run("r", Phase::Running, 1, spec(json!({"retry": {"limit": 1}})));
    running.run_id = Some("abc".into());
    let steps = recover(&running, true, NOW);
    assert_eq!(
        steps.first(),
        Some(&Step::FailMlflowRun {
            run_id: "abc".into()
        })
    );
    let m = only_move(&steps);
    assert_eq!(
        (m.from.as_slice(), m.to),
        (&[Phase::Running][..], Phase::Pending)
    );
    assert!(m.event.as_ref().is_some_and(|e| e.message.starts_with(
        "attempt 1 failed: the worker stopped during attempt 1 (ctflow restarted); retrying"
    )));
    // Separate workers: the job's worker may live; the bus redelivers if it died.
    assert!(recover(&running, false, NOW).is_empty());
    for phase in [Phase::Pending, Phase::Evaluating, Phase::Succeeded] {
        assert!(recover(&run("r", phase, 1, spec(json!({}))), true, NOW).is_empty());
    }
}

#[test]
fn a_restart_queues_again_an_attempt_claimed_but_never_started() {
    let claimed = run("r", Phase::Running, 1, spec(json!({})));
    let steps = recover(&claimed, true, NOW);
    let m = only_move(&steps);
    assert_eq!(
        (m.from.as_slice(), m.to, m.then),
        (&[Phase::Running][..], Phase::Queued, Some(Effect::QueueJob))
    );
    assert!(
        m.changes.iter().all(|c| !matches!(c, Change::Attempt(_))),
        "the same attempt"
    );
    assert!(
        m.event.as_ref().is_some_and(|e| e.message
            == "attempt 1 queued again after a restart: its worker had not started it")
    );
    assert_eq!(steps.len(), 1, "no MLflow run to fail");
    assert!(recover(&claimed, false, NOW).is_empty());
}

#[test]
fn a_start_time_is_set_once() {
    let mut retried = run("r", Phase::Pending, 1, spec(json!({})));
    retried.start_time = Some(5);
    let steps = admit_pending(std::slice::from_ref(&retried), NOW);
    assert_eq!(applied(retried, only_move(&steps)).start_time, Some(5));
}

// ---- properties ----

fn any_policy() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["Allow", "Forbid", "Replace", "Enqueue"])
}

fn unfinished_runs() -> impl Strategy<Value = Vec<(Phase, i64, Option<i64>)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(UNFINISHED_PHASES.to_vec()),
            0i64..3,
            proptest::option::of(NOW - 5..NOW + 5),
        ),
        0..12,
    )
}

/// Applies every move as the store would: only when the run is still in `from`.
fn apply_all(runs: &mut [PipelineRun], steps: &[Step]) {
    for m in moves(steps) {
        if let Some(r) = runs.iter_mut().find(|r| r.id == m.run)
            && m.from.contains(&r.phase)
        {
            m.apply(r);
        }
    }
}

proptest! {
    /// Admission never lets a policy other than Allow add a second active run, never
    /// starts a run twice, and only ever makes listed transitions.
    #[test]
    fn admission_keeps_the_policy(policy in any_policy(), shape in unfinished_runs()) {
        let mut runs: Vec<PipelineRun> = shape
            .iter()
            .enumerate()
            .map(|(i, (phase, attempt, not_before))| {
                // A first attempt is only ever Pending; later phases have an attempt.
                let attempt = if *phase == Phase::Pending { *attempt } else { attempt.max(&1).to_owned() };
                let mut r = run(&format!("r{i}"), *phase, attempt, spec(json!({"concurrencyPolicy": policy})));
                r.not_before = *not_before;
                r
            })
            .collect();
        let before: Vec<PipelineRun> = runs.clone();
        let steps = admit_pending(&runs, NOW);
        let mut started = BTreeSet::new();
        for m in moves(&steps) {
            if m.to == Phase::Queued {
                prop_assert!(started.insert(m.run.clone()), "started twice: {}", m.run);
            }
        }
        apply_all(&mut runs, &steps);
        for (old, new) in before.iter().zip(&runs) {
            if old.phase != new.phase {
                prop_assert!(TRANSITIONS.contains(&(old.phase, new.phase)), "{} -> {}", old.phase, new.phase);
            }
        }
        let holding_before = before.iter().filter(|r| holds_slot(r)).count();
        let holding_after = runs.iter().filter(|r| holds_slot(r)).count();
        let first_attempts_started = before
            .iter()
            .zip(&runs)
            .filter(|(o, n)| o.attempt == 0 && n.phase == Phase::Queued)
            .count();
        match policy {
            "Allow" => {
                let eligible = before.iter().filter(|r| r.phase == Phase::Pending && r.attempt == 0).count();
                prop_assert_eq!(first_attempts_started, eligible);
            }
            "Replace" => prop_assert!(holding_after <= holding_before.max(1) && first_attempts_started <= 1),
            _ => {
                prop_assert!(first_attempts_started <= 1);
                if holding_before > 0 {
                    prop_assert_eq!(first_attempts_started, 0);
                }
                prop_assert!(holding_after <= holding_before.max(1));
            }
        }
    }

    /// A run driven by any sequence of reports, gate outcomes and answers only makes
    /// listed transitions, never leaves a terminal phase, and never runs more attempts
    /// than its retry policy allows.
    #[test]
    fn a_run_lives_by_the_table(
        limit in 0u32..3,
        manual in any::<bool>(),
        shadowed in any::<bool>(),
        insufficient in proptest::sample::select(vec!["fail", "pass", "pause"]),
        events in proptest::collection::vec((0u8..10, any::<bool>(), proptest::option::of(0.0f64..1.0)), 1..40),
    ) {
        let mut cd = json!({"approval": if manual { "manual" } else { "auto" }, "timeout": "10s"});
        if shadowed {
            cd["shadow"] = json!({"requests": 10, "minAgreement": 0.9, "timeout": "5s", "onInsufficientData": insufficient});
        }
        let spec = spec(json!({
            "retry": {"limit": limit, "backoff": "1s"},
            "gates": {
                "ct": {"metrics": [{"metric": "accuracy", "threshold": 0.5}], "onInsufficientData": insufficient},
                "cd": cd,
            },
        }));
        let mut current = run("r", Phase::Pending, 0, spec);
        let mut now = NOW;
        for (kind, flag, accuracy) in events {
            let attempt = current.attempt;
            let steps = match kind {
                0 => admit_pending(std::slice::from_ref(&current), now),
                1 => on_report(&current, &JobEvent::Started { pipeline_run: "r".into(), attempt, run_id: "m".into() }, now),
                2 => on_report(&current, &finished(attempt, if flag { JobStatus::Succeeded } else { JobStatus::Failed }), now),
                3 => match begin_evaluation(&current) {
                    _ if current.phase != Phase::Evaluating => Vec::new(),
                    Evaluation::Decided(m) => vec![Step::Move(*m)],
                    Evaluation::FindCandidate { .. } => {
                        judge(&current, &inputs(accuracy, flag.then_some((1, 0.5))), USER, now)
                    }
                },
                4 => {
                    current.approval = Some(Approval { approved: flag, user: "alice".into() });
                    answer(&current, None, USER, now).map(Step::Move).into_iter().collect()
                }
                5 => recover(&current, flag, now),
                6 => { now += 20_000; answer(&current, None, USER, now).map(Step::Move).into_iter().collect() }
                7 => {
                    if let Some(progress) = current.shadow.as_mut() {
                        let agreed = accuracy.map_or(0, |a| (a * 20.0) as u64);
                        progress.replicas.insert("pod".into(), crate::shadow::ShadowTally {
                            requests: if flag { 20 } else { 3 },
                            rows: 20,
                            agreed_rows: agreed,
                            ..Default::default()
                        });
                    }
                    shadow(&current, Some(1), &[], USER, now)
                }
                8 => claim(&current, attempt, if flag { 2 } else { 1 }, "w", now)
                    .map(Step::Move)
                    .into_iter()
                    .collect(),
                _ => on_report(&current, &finished(attempt, JobStatus::CiFailed), now),
            };
            for m in moves(&steps) {
                if !m.from.contains(&current.phase) {
                    continue;
                }
                let old = current.phase;
                prop_assert!(!old.is_terminal(), "a move out of {}", old);
                m.apply(&mut current);
                if old != current.phase {
                    prop_assert!(TRANSITIONS.contains(&(old, current.phase)), "{} -> {}", old, current.phase);
                }
            }
            prop_assert!(current.attempt <= i64::from(limit) + 1, "attempt {} with limit {}", current.attempt, limit);
        }
    }

}

#[test]
fn one_worker_claims_a_first_delivery_and_a_later_one_may_take_over() {
    let queued = run("r", Phase::Queued, 1, spec(json!({})));
    let taken = claim(&queued, 1, 1, "host:1", NOW).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (taken.from.as_slice(), taken.to),
        (&[Phase::Queued][..], Phase::Running)
    );
    let note = taken.event.as_ref().map(|e| e.message.as_str());
    assert_eq!(note, Some("attempt 1 taken by worker host:1"));
    let mut running = queued.clone();
    taken.apply(&mut running);
    assert_eq!(running.phase, Phase::Running);

    // The same job handed to a second worker as new (a bus that lost its counts).
    let again = claim(&running, 1, 1, "host:2", NOW);
    assert_eq!(
        again.map(|m| m.to),
        Err(ClaimRefused::RunningElsewhere { attempt: 1 })
    );
    assert_eq!(
        ClaimRefused::RunningElsewhere { attempt: 1 }.to_string(),
        "attempt 1 is already running on another worker"
    );
    // A redelivery: the first worker died or handed it back.
    let over = claim(&running, 1, 2, "host:2", NOW).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (over.from.as_slice(), over.to),
        (&[Phase::Running][..], Phase::Running)
    );
    assert!(over.event.is_some_and(|e| {
        e.message
            .contains("taken over by worker host:2 (delivery 2)")
    }));

    let stale = claim(&running, 0, 1, "host:2", NOW).map_err(|e| e.to_string());
    assert_eq!(
        stale.map(|m| m.to),
        Err("attempt 0 is not the run's current attempt (1)".to_string())
    );
    for phase in [
        Phase::Pending,
        Phase::Evaluating,
        Phase::Succeeded,
        Phase::Canceled,
    ] {
        let moved_on = run("r", phase, 1, spec(json!({})));
        assert!(
            matches!(
                claim(&moved_on, 1, 2, "host:2", NOW),
                Err(ClaimRefused::Stale(_))
            ),
            "{phase}"
        );
    }
}

#[test]
fn the_table_has_no_exit_from_the_end() {
    for (from, to) in TRANSITIONS {
        assert!(
            !from.is_terminal(),
            "{from} -> {to} leaves a terminal phase"
        );
        assert_ne!(from, to, "a move that keeps the phase is not a transition");
    }
}

#[test]
fn the_table_is_what_the_docs_count() {
    // docs/architecture.md shows this table; a new transition updates both.
    assert_eq!(TRANSITIONS.len(), 38);
    let distinct: BTreeSet<(&str, &str)> = TRANSITIONS
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(distinct.len(), TRANSITIONS.len());
}

#[test]
fn a_run_with_training_data_is_snapshotted_once_before_its_first_attempt() {
    let with_data = spec(json!({"data": {"paths": ["data/*.csv"]}}));
    let fresh = run("r", Phase::Pending, 0, with_data.clone());
    let steps = admit_pending(std::slice::from_ref(&fresh), NOW);
    assert_eq!(
        steps.first(),
        Some(&Step::TakeSnapshot { run: "r".into() }),
        "{steps:#?}"
    );
    assert_eq!(only_move(&steps).to, Phase::Queued);

    // A retry trains on the snapshot its first attempt recorded.
    let mut retry = run("r", Phase::Pending, 1, with_data.clone());
    retry.snapshot_id = Some("abc".into());
    let steps = admit_pending(std::slice::from_ref(&retry), NOW);
    assert!(!steps.iter().any(|s| matches!(s, Step::TakeSnapshot { .. })));

    // Without `spec.data` there is nothing to snapshot.
    let plain = run("p", Phase::Pending, 0, policy("Allow"));
    let steps = admit_pending(std::slice::from_ref(&plain), NOW);
    assert!(!steps.iter().any(|s| matches!(s, Step::TakeSnapshot { .. })));

    let failed = applied(fresh.clone(), &no_snapshot(&fresh, "no training data"));
    assert_eq!(failed.phase, Phase::Failed);
    assert_eq!(
        failed.decision.as_deref(),
        Some("cannot snapshot the training data: no training data")
    );
}

// ---- the shadow gate ----

fn shadowing_spec(extra: serde_json::Value) -> TrainingPipelineSpec {
    let mut shadow =
        json!({"requests": 10, "minAgreement": 0.9, "maxLatencyRatio": 2.0, "timeout": "1m"});
    if let (Some(shadow), Some(extra)) = (shadow.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            shadow.insert(key.clone(), value.clone());
        }
    }
    spec(json!({"gates": {
        "ct": {"metrics": [{"metric": "accuracy", "threshold": 0.8}]},
        "cd": {"shadow": shadow},
    }}))
}

fn shadowing(spec: TrainingPipelineSpec, requests: u64, agreed: u64, errors: u64) -> PipelineRun {
    let mut observed = run("r", Phase::Shadowing, 1, spec);
    observed.model_version = Some(2);
    let mut progress = ShadowProgress {
        started: NOW,
        champion: Some(1),
        ..ShadowProgress::default()
    };
    progress.replicas.insert(
        "pod-a".into(),
        crate::shadow::ShadowTally {
            requests,
            rows: requests,
            agreed_rows: agreed,
            errors,
            champion_p99_ms: Some(4.0),
            challenger_p99_ms: Some(5.0),
            ..Default::default()
        },
    );
    observed.shadow = Some(progress);
    observed
}

#[test]
fn a_candidate_that_passed_ct_shadows_the_champion_first() {
    let observed = run("r", Phase::Evaluating, 1, shadowing_spec(json!({})));
    let steps = judge(&observed, &inputs(Some(0.9), Some((1, 0.85))), USER, NOW);
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::Shadowing);
    let aliases: Vec<&str> = m.promotions.iter().map(|p| p.alias.as_str()).collect();
    assert_eq!(aliases, ["challenger"], "the champion does not move yet");
    assert!(m.changes.contains(&Change::StartShadow {
        started: NOW,
        champion: 1
    }));
    assert!(m.changes.contains(&Change::ApprovalDeadline(NOW + 60_000)));
    let shadowed = applied(observed.clone(), m);
    assert_eq!(shadowed.shadow.as_ref().map(|s| s.started), Some(NOW));
    // With no champion there is nothing to shadow: promoted at once.
    let steps = judge(&observed, &inputs(Some(0.9), None), USER, NOW);
    assert_eq!(only_move(&steps).to, Phase::Succeeded);
    // A dry-run CD gate does not shadow.
    let mut dry = observed;
    dry.spec.gates.cd.dry_run = true;
    let steps = judge(&dry, &inputs(Some(0.9), Some((1, 0.85))), USER, NOW);
    assert_eq!(only_move(&steps).to, Phase::Succeeded);
}

#[test]
fn the_shadow_waits_for_traffic_then_promotes_with_its_numbers() {
    let quiet = shadowing(shadowing_spec(json!({})), 5, 5, 0);
    assert!(shadow(&quiet, Some(1), &[], USER, NOW + 1_000).is_empty());
    let agreeing = shadowing(shadowing_spec(json!({})), 10, 10, 0);
    let steps = shadow(&agreeing, Some(1), &[], USER, NOW + 1_000);
    let Step::Record { event, .. } = &steps[0] else {
        panic!("the verdict is recorded first: {steps:#?}");
    };
    assert_eq!(event.gate.as_deref(), Some("cd"));
    assert_eq!(event.result.as_deref(), Some("pass"));
    assert_eq!(event.detail["shadow"]["summary"]["agreement"], 1.0);
    assert_eq!(event.detail["shadow"]["summary"]["latency_ratio"], 1.25);
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::Succeeded);
    let aliases: Vec<&str> = m.promotions.iter().map(|p| p.alias.as_str()).collect();
    assert_eq!(
        aliases,
        ["champion"],
        "the challenger alias was set when shadowing began"
    );
    assert_eq!(
        decision(m),
        Some("version 2 is the champion (was version 1)")
    );
    // With a manual CD, a person approves after the shadow passed.
    let manual = shadowing(
        spec(json!({"gates": {"cd": {"approval": "manual", "shadow": {"requests": 10}}}})),
        10,
        1,
        0,
    );
    let steps = shadow(&manual, Some(1), &[], USER, NOW + 1_000);
    assert_eq!(only_move(&steps).to, Phase::WaitingApproval);
}

#[test]
fn a_disagreeing_challenger_fails_the_gate_with_the_numbers() {
    let disagreeing = shadowing(shadowing_spec(json!({})), 10, 4, 0);
    let steps = shadow(&disagreeing, Some(1), &[], USER, NOW + 1_000);
    let m = only_move(&steps);
    assert_eq!(m.to, Phase::GateFailed);
    assert!(m.promotions.is_empty());
    let text = decision(m).unwrap_or_default();
    assert!(
        text.starts_with("CD gate: shadow failed: agreement 40.0%, needs >= 90.0%"),
        "{text}"
    );
    let event = m.event.as_ref().map(|e| &e.detail["shadow"]["checks"][0]);
    assert_eq!(event.map(|c| c["verdict"].clone()), Some(json!("fail")));
    // Errors fail it before the sample is complete.
    let erring = shadowing(shadowing_spec(json!({})), 2, 2, 1);
    let steps = shadow(&erring, Some(1), &[], USER, NOW + 1_000);
    assert_eq!(only_move(&steps).to, Phase::GateFailed);
}

#[test]
fn too_little_traffic_follows_the_insufficient_data_rule() {
    let at_timeout = NOW + 60_000;
    for (rule, phase) in [
        ("fail", Phase::GateFailed),
        ("pass", Phase::Succeeded),
        ("pause", Phase::WaitingApproval),
    ] {
        let quiet = shadowing(shadowing_spec(json!({"onInsufficientData": rule})), 3, 3, 0);
        let steps = shadow(&quiet, Some(1), &[], USER, at_timeout);
        let m = only_move(&steps);
        assert_eq!(m.to, phase, "{rule}");
        let recorded = steps
            .iter()
            .find_map(|s| match s {
                Step::Record { event, .. } => Some(event),
                Step::Move(m) => m.event.as_ref().filter(|e| e.gate.is_some()),
                _ => None,
            })
            .map(|e| (e.result.clone(), e.message.clone()));
        let (result, message) = recorded.unwrap_or_default();
        assert_eq!(result.as_deref(), Some("inconclusive"), "{rule}");
        assert!(
            message
                .starts_with("shadow inconclusive: 3 of 10 requests compared before the timeout"),
            "{message}"
        );
    }
}
