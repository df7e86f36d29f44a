//! The shadow part of the CD gate: what a serving replica counts while the challenger
//! answers a mirrored copy of the champion's traffic, how the replicas' counts add up, and
//! the verdict on them.
//!
//! Each replica reports its own running totals (a later report replaces the earlier one),
//! so a report that is lost or repeated changes nothing; the gate sums the latest of each.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gates::Verdict;
use crate::monitoring::{LiveMetric, Outcome};
use crate::pipeline::ShadowGate;

/// One serving replica's numbers since it began mirroring to the challenger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowTally {
    /// Mirrored requests both models answered (the ones compared).
    pub requests: u64,
    /// Rows of those requests (a request may score many).
    pub rows: u64,
    /// Rows on which the challenger predicted what the champion did.
    pub agreed_rows: u64,
    /// Mirrored requests the challenger failed on: a model error, a refusal of the input
    /// by its signature, no worker to answer, or a challenger that would not load.
    pub errors: u64,
    /// Copies never mirrored because the shadow's queue was full (the champion answered
    /// them as always).
    pub dropped: u64,
    /// The champion's median time on the compared requests, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_p50_ms: Option<f64>,
    /// The champion's 99th percentile time on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_p99_ms: Option<f64>,
    /// The challenger's median time on the same requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_p50_ms: Option<f64>,
    /// The challenger's 99th percentile time on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_p99_ms: Option<f64>,
    /// The champion version that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_version: Option<String>,
    /// Why the challenger could not be loaded, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    /// When the replica sent these numbers (epoch ms; set by the server).
    #[serde(default)]
    pub updated: i64,
}

impl ShadowTally {
    /// Checks a report as it arrives: counts that add up and finite, non-negative times.
    pub fn validate(&self) -> Result<(), String> {
        if self.agreed_rows > self.rows {
            return Err(format!(
                "agreed_rows ({}) cannot exceed rows ({})",
                self.agreed_rows, self.rows
            ));
        }
        for (field, value) in [
            ("champion_p50_ms", self.champion_p50_ms),
            ("champion_p99_ms", self.champion_p99_ms),
            ("challenger_p50_ms", self.challenger_p50_ms),
            ("challenger_p99_ms", self.challenger_p99_ms),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{field} must be a non-negative number, got {v}"));
            }
        }
        Ok(())
    }
}

/// A run's shadow so far: when it began, against which champion, and each replica's latest
/// report, by replica name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowProgress {
    /// When the run began shadowing (epoch ms).
    pub started: i64,
    /// The champion version when it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<i64>,
    /// The latest report of each serving replica that mirrors.
    #[serde(default)]
    pub replicas: BTreeMap<String, ShadowTally>,
}

/// The replicas' reports added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowSummary {
    /// Compared requests.
    pub requests: u64,
    /// Compared rows.
    pub rows: u64,
    /// Rows the two agreed on.
    pub agreed_rows: u64,
    /// The challenger's failures.
    pub errors: u64,
    /// Copies dropped by a full queue.
    pub dropped: u64,
    /// Agreed rows over compared rows (`None` before any row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// The challenger's p99 over the champion's, the highest of any replica that compared
    /// a request (each replica times both models on the same machine and requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    /// Replicas that reported.
    pub replicas: usize,
    /// The latest load error a replica reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

impl ShadowProgress {
    /// The replicas' latest reports added up.
    pub fn summary(&self) -> ShadowSummary {
        let mut summary = ShadowSummary {
            replicas: self.replicas.len(),
            ..ShadowSummary::default()
        };
        for tally in self.replicas.values() {
            summary.requests = summary.requests.saturating_add(tally.requests);
            summary.rows = summary.rows.saturating_add(tally.rows);
            summary.agreed_rows = summary.agreed_rows.saturating_add(tally.agreed_rows);
            summary.errors = summary.errors.saturating_add(tally.errors);
            summary.dropped = summary.dropped.saturating_add(tally.dropped);
            if let Some(error) = &tally.load_error {
                summary.load_error = Some(error.clone());
            }
            if tally.requests > 0
                && let (Some(champion), Some(challenger)) =
                    (tally.champion_p99_ms, tally.challenger_p99_ms)
            {
                // NB: a champion faster than the clock's resolution would make any ratio
                // infinite; a tenth of a millisecond is the floor.
                let ratio = challenger / champion.max(0.1);
                summary.latency_ratio = Some(summary.latency_ratio.map_or(ratio, |r| r.max(ratio)));
            }
        }
        if summary.rows > 0 {
            summary.agreement = Some(summary.agreed_rows as f64 / summary.rows as f64);
        }
        summary
    }
}

/// Both models' answers for one row of a mirrored request, kept so that labels sent for
/// the request later score both on the same row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPrediction {
    /// The request id (the one the inference log and feedback use).
    pub request_id: String,
    /// The row of the request.
    pub row: u32,
    /// The champion's prediction.
    pub champion: Value,
    /// The challenger's prediction.
    pub challenger: Value,
}

/// The rows of one mirrored request both models answered: a list is one row per item
/// (rows only one model answered are left out); anything else is row 0.
pub fn prediction_rows(
    request_id: &str,
    champion: &Value,
    challenger: &Value,
) -> Vec<ShadowPrediction> {
    let row = |row: usize, champion: &Value, challenger: &Value| ShadowPrediction {
        request_id: request_id.to_string(),
        row: u32::try_from(row).unwrap_or(u32::MAX),
        champion: champion.clone(),
        challenger: challenger.clone(),
    };
    match (champion, challenger) {
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .map(|(i, (x, y))| row(i, x, y))
            .collect(),
        (a, b) => vec![row(0, a, b)],
    }
}

/// A live metric of both models on the labelled rows both answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveComparison {
    /// The metric's name.
    pub metric: String,
    /// Rows with a label.
    pub labelled: u64,
    /// The champion's value on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<f64>,
    /// The challenger's value on the same rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger: Option<f64>,
}

/// Scores both models on the rows of `predictions` that have a label in `labels` (by
/// request id and row).
pub fn compare_live(
    metric: LiveMetric,
    predictions: &[ShadowPrediction],
    labels: &HashMap<(String, u32), Outcome>,
) -> LiveComparison {
    let mut champion = Vec::new();
    let mut challenger = Vec::new();
    for p in predictions {
        if let Some(label) = labels.get(&(p.request_id.clone(), p.row)) {
            champion.push((Outcome::from_json(&p.champion), label.clone()));
            challenger.push((Outcome::from_json(&p.challenger), label.clone()));
        }
    }
    LiveComparison {
        metric: metric.as_str().to_string(),
        labelled: champion.len() as u64,
        champion: metric.score(&champion),
        challenger: metric.score(&challenger),
    }
}

/// One criterion of the shadow gate with the number it was judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowCheck {
    /// `agreement`, `latency_ratio` or `errors`.
    pub criterion: String,
    /// The measured value (`None` when nothing was measured).
    pub value: Option<f64>,
    /// The bound it had to meet (`None` when there was none to compute: a live metric
    /// without enough labels, or the champion scored nothing).
    pub required: Option<f64>,
    /// `>=` or `<=`.
    pub operator: String,
    /// This criterion's outcome.
    pub verdict: Verdict,
}

/// Where a shadow stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowJudgement {
    /// Not enough compared traffic yet, and the timeout has not passed.
    Waiting,
    /// The gate's verdict, with each criterion's numbers.
    Decided {
        /// Pass, fail, or inconclusive (too little traffic before the timeout, or a
        /// criterion with nothing measured).
        verdict: Verdict,
        /// The criteria, as judged.
        checks: Vec<ShadowCheck>,
        /// The numbers they were judged on.
        summary: ShadowSummary,
    },
}

fn check(
    criterion: &str,
    value: Option<f64>,
    required: Option<f64>,
    at_least: bool,
) -> ShadowCheck {
    let verdict = match (value, required) {
        (None, _) | (_, None) => Verdict::Inconclusive,
        (Some(v), Some(required)) => judged(v, required, at_least),
    };
    ShadowCheck {
        criterion: criterion.to_string(),
        value,
        required,
        operator: if at_least { ">=" } else { "<=" }.to_string(),
        verdict,
    }
}

fn judged(value: f64, required: f64, at_least: bool) -> Verdict {
    match value {
        v if v.is_nan() => Verdict::Inconclusive,
        v if (at_least && v >= required) || (!at_least && v <= required) => Verdict::Pass,
        _ => Verdict::Fail,
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether the traffic part of the sample is in: `requests` compared and `duration` over.
fn traffic_complete(gate: &ShadowGate, summary: &ShadowSummary, elapsed: i64) -> bool {
    summary.requests >= gate.requests && gate.duration.is_none_or(|d| elapsed >= millis(d.0))
}

/// Whether the gate's live metrics can change its verdict now: it names some, and the
/// traffic part of the sample is in or the timeout has passed. Before that the verdict
/// waits whatever the labels say, so scoring them can wait too.
pub fn live_metrics_needed(gate: &ShadowGate, progress: &ShadowProgress, now: i64) -> bool {
    let elapsed = now.saturating_sub(progress.started);
    !gate.metrics.is_empty()
        && (traffic_complete(gate, &progress.summary(), elapsed)
            || elapsed >= millis(gate.timeout.0))
}

/// The shadow gate on the replicas' reports at `now` (epoch ms). More errors than allowed
/// fail it at once; otherwise it waits for `requests` compared requests (and `duration`)
/// and then judges every criterion; at the timeout with less, it is inconclusive.
pub fn judge_shadow(
    gate: &ShadowGate,
    progress: &ShadowProgress,
    live: &[LiveComparison],
    now: i64,
) -> ShadowJudgement {
    let summary = progress.summary();
    let errors = check(
        "errors",
        Some(summary.errors as f64),
        Some(gate.max_errors as f64),
        false,
    );
    let mut checks = Vec::new();
    if let Some(min) = gate.min_agreement {
        checks.push(check("agreement", summary.agreement, Some(min), true));
    }
    if let Some(max) = gate.max_latency_ratio {
        checks.push(check(
            "latency_ratio",
            summary.latency_ratio,
            Some(max),
            false,
        ));
    }
    let mut labels_missing = false;
    for wanted in &gate.metrics {
        let Ok(metric) = LiveMetric::parse(&wanted.metric) else {
            continue;
        };
        let measured = live.iter().find(|l| l.metric == metric.as_str());
        let labelled = measured.map_or(0, |l| l.labelled);
        let criterion = format!("live_{}", metric.as_str());
        if labelled < wanted.min_labels {
            labels_missing = true;
            checks.push(ShadowCheck {
                criterion,
                value: measured.and_then(|l| l.challenger),
                required: None,
                operator: format!("needs {} labelled rows, has {labelled}", wanted.min_labels),
                verdict: Verdict::Inconclusive,
            });
            continue;
        }
        let champion = measured.and_then(|l| l.champion);
        let bound = champion.map(|c| {
            if metric.higher_is_better() {
                c - wanted.max_drop
            } else {
                c + wanted.max_drop
            }
        });
        checks.push(check(
            &criterion,
            measured.and_then(|l| l.challenger),
            bound,
            metric.higher_is_better(),
        ));
    }
    let too_many_errors = errors.verdict == Verdict::Fail;
    checks.push(errors);
    if too_many_errors {
        return ShadowJudgement::Decided {
            verdict: Verdict::Fail,
            checks,
            summary,
        };
    }
    let elapsed = now.saturating_sub(progress.started);
    if !traffic_complete(gate, &summary, elapsed) || labels_missing {
        if elapsed < millis(gate.timeout.0) {
            return ShadowJudgement::Waiting;
        }
        return ShadowJudgement::Decided {
            verdict: Verdict::Inconclusive,
            checks,
            summary,
        };
    }
    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    ShadowJudgement::Decided {
        verdict,
        checks,
        summary,
    }
}

/// Compares the two models' answers to one request: `(rows, agreed rows)`. Lists are
/// compared row by row (a missing row disagrees); anything else is one row. Values
/// compare as [`Outcome`]s: numbers as numbers, other values as their JSON text.
pub fn compare_predictions(champion: &Value, challenger: &Value) -> (u64, u64) {
    match (champion, challenger) {
        (Value::Array(a), Value::Array(b)) => {
            let rows = a.len().max(b.len()) as u64;
            let agreed = a
                .iter()
                .zip(b)
                .filter(|(x, y)| Outcome::from_json(x) == Outcome::from_json(y))
                .count() as u64;
            (rows, agreed)
        }
        (a, b) => (1, u64::from(Outcome::from_json(a) == Outcome::from_json(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{DurationSpec, InsufficientData};
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::Duration;

    fn gate() -> ShadowGate {
        ShadowGate {
            requests: 100,
            duration: None,
            timeout: DurationSpec(Duration::from_secs(60)),
            min_agreement: Some(0.9),
            max_latency_ratio: Some(2.0),
            max_errors: 0,
            on_insufficient_data: InsufficientData::Fail,
            metrics: Vec::new(),
        }
    }

    fn tally(requests: u64, rows: u64, agreed: u64, errors: u64) -> ShadowTally {
        ShadowTally {
            requests,
            rows,
            agreed_rows: agreed,
            errors,
            champion_p99_ms: Some(10.0),
            challenger_p99_ms: Some(12.0),
            ..ShadowTally::default()
        }
    }

    fn progress(tallies: &[ShadowTally]) -> ShadowProgress {
        ShadowProgress {
            started: 1_000,
            champion: Some(1),
            replicas: tallies
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("replica-{i}"), t.clone()))
                .collect(),
        }
    }

    fn verdict(judgement: &ShadowJudgement) -> Option<Verdict> {
        match judgement {
            ShadowJudgement::Waiting => None,
            ShadowJudgement::Decided { verdict, .. } => Some(*verdict),
        }
    }

    #[test]
    fn replicas_add_up_and_the_slowest_ratio_counts() {
        let mut slow = tally(10, 20, 10, 1);
        slow.challenger_p99_ms = Some(30.0);
        let summary = progress(&[tally(90, 90, 90, 0), slow]).summary();
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.rows, 110);
        assert_eq!(summary.agreed_rows, 100);
        assert_eq!(summary.errors, 1);
        assert_eq!(summary.replicas, 2);
        assert_eq!(summary.latency_ratio, Some(3.0));
        assert!((summary.agreement.unwrap_or_default() - 100.0 / 110.0).abs() < 1e-12);
    }

    #[test]
    fn the_gate_waits_for_its_sample_then_judges() {
        let now = 2_000;
        let partial = progress(&[tally(50, 50, 50, 0)]);
        assert_eq!(
            judge_shadow(&gate(), &partial, &[], now),
            ShadowJudgement::Waiting
        );
        let agreeing = progress(&[tally(100, 100, 95, 0)]);
        assert_eq!(
            verdict(&judge_shadow(&gate(), &agreeing, &[], now)),
            Some(Verdict::Pass)
        );
        let disagreeing = progress(&[tally(100, 100, 50, 0)]);
        let judged = judge_shadow(&gate(), &disagreeing, &[], now);
        let ShadowJudgement::Decided {
            verdict, checks, ..
        } = judged
        else {
            panic!("decided");
        };
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(checks[0].criterion, "agreement");
        assert_eq!(checks[0].value, Some(0.5));
        assert_eq!(checks[0].verdict, Verdict::Fail);
        assert_eq!(checks[1].verdict, Verdict::Pass, "latency 1.2 <= 2");
    }

    #[test]
    fn errors_fail_at_once_and_too_little_traffic_is_inconclusive_at_the_timeout() {
        let failing = progress(&[tally(3, 3, 3, 1)]);
        assert_eq!(
            verdict(&judge_shadow(&gate(), &failing, &[], 2_000)),
            Some(Verdict::Fail)
        );
        let quiet = progress(&[tally(3, 3, 3, 0)]);
        assert_eq!(
            judge_shadow(&gate(), &quiet, &[], 1_000 + 59_999),
            ShadowJudgement::Waiting
        );
        assert_eq!(
            verdict(&judge_shadow(&gate(), &quiet, &[], 1_000 + 60_000)),
            Some(Verdict::Inconclusive)
        );
        let nobody = progress(&[]);
        assert_eq!(
            verdict(&judge_shadow(&gate(), &nobody, &[], 1_000 + 60_000)),
            Some(Verdict::Inconclusive)
        );
    }

    #[test]
    fn a_minimum_duration_holds_the_verdict_back() {
        let mut with_duration = gate();
        with_duration.duration = Some(DurationSpec(Duration::from_secs(10)));
        let enough = progress(&[tally(500, 500, 500, 0)]);
        assert_eq!(
            judge_shadow(&with_duration, &enough, &[], 1_000 + 9_000),
            ShadowJudgement::Waiting
        );
        assert_eq!(
            verdict(&judge_shadow(&with_duration, &enough, &[], 1_000 + 10_000)),
            Some(Verdict::Pass)
        );
    }

    #[test]
    fn labels_score_both_models_on_the_same_rows() {
        let mut predictions = prediction_rows("a", &json!([0, 1]), &json!([1, 1]));
        predictions.extend(prediction_rows("b", &json!(2), &json!(2)));
        predictions.extend(prediction_rows("c", &json!([0]), &json!([0])));
        assert_eq!(predictions.len(), 4);
        // Labels for a's two rows and b; c has none; one label is for no mirrored row.
        let labels: HashMap<(String, u32), Outcome> = [
            (("a".to_string(), 0), Outcome::Number(1.0)),
            (("a".to_string(), 1), Outcome::Number(1.0)),
            (("b".to_string(), 0), Outcome::Number(2.0)),
            (("z".to_string(), 0), Outcome::Number(0.0)),
        ]
        .into();
        let live = compare_live(LiveMetric::Accuracy, &predictions, &labels);
        assert_eq!(live.labelled, 3);
        assert_eq!(live.challenger, Some(1.0));
        assert!((live.champion.unwrap_or_default() - 2.0 / 3.0).abs() < 1e-12);

        let mut g = gate();
        g.min_agreement = None;
        g.requests = 1;
        g.metrics = vec![crate::pipeline::ShadowMetric {
            metric: "accuracy".into(),
            min_labels: 3,
            max_drop: 0.0,
        }];
        let traffic = progress(&[tally(3, 4, 2, 0)]);
        assert_eq!(
            verdict(&judge_shadow(
                &g,
                &traffic,
                std::slice::from_ref(&live),
                2_000
            )),
            Some(Verdict::Pass),
            "better than the champion where it disagrees"
        );
        let worse = LiveComparison {
            challenger: Some(0.5),
            ..live.clone()
        };
        let ShadowJudgement::Decided {
            verdict: worse_verdict,
            checks,
            ..
        } = judge_shadow(&g, &traffic, &[worse], 2_000)
        else {
            panic!("decided");
        };
        assert_eq!(worse_verdict, Verdict::Fail);
        let accuracy = checks.iter().find(|c| c.criterion == "live_accuracy");
        assert_eq!(accuracy.map(|c| c.verdict), Some(Verdict::Fail));
        assert!(live_metrics_needed(&g, &traffic, 2_000));
        assert!(!live_metrics_needed(
            &g,
            &progress(&[tally(0, 0, 0, 0)]),
            2_000
        ));
        assert!(live_metrics_needed(&g, &progress(&[]), 1_000 + 60_000));
        assert!(
            !live_metrics_needed(&gate(), &traffic, 2_000),
            "no live metrics named"
        );
        // Too few labels: it waits for them, and at the timeout it is inconclusive.
        let few = LiveComparison {
            labelled: 2,
            ..live
        };
        assert_eq!(
            judge_shadow(&g, &traffic, std::slice::from_ref(&few), 2_000),
            ShadowJudgement::Waiting
        );
        assert_eq!(
            verdict(&judge_shadow(&g, &traffic, &[few], 1_000 + 60_000)),
            Some(Verdict::Inconclusive)
        );
    }

    #[test]
    fn predictions_compare_row_by_row_as_outcomes() {
        assert_eq!(
            compare_predictions(&json!([1, 2, "a"]), &json!([1.0, 3, "a"])),
            (3, 2)
        );
        assert_eq!(compare_predictions(&json!([1, 2]), &json!([1])), (2, 1));
        assert_eq!(
            compare_predictions(&json!({"y": 1}), &json!({"y": 1})),
            (1, 1)
        );
        assert_eq!(
            compare_predictions(&json!([[0.1, 0.9]]), &json!([[0.2, 0.8]])),
            (1, 0)
        );
    }

    #[test]
    fn bad_reports_are_refused() {
        assert!(tally(1, 1, 2, 0).validate().is_err());
        let mut negative = tally(1, 1, 1, 0);
        negative.champion_p50_ms = Some(-1.0);
        assert!(negative.validate().is_err());
        assert!(tally(1, 1, 1, 0).validate().is_ok());
    }

    proptest! {
        #[test]
        fn agreement_is_a_share_and_errors_over_the_limit_never_pass(
            reports in proptest::collection::vec((0u64..1000, 0u64..1000, 0u64..1000, 0u64..5), 0..6),
            max_errors in 0u64..5,
            now in 0i64..200_000,
        ) {
            let tallies: Vec<ShadowTally> = reports
                .iter()
                .map(|(requests, rows, agreed, errors)| tally(*requests, *rows, (*agreed).min(*rows), *errors))
                .collect();
            let progress = progress(&tallies);
            let summary = progress.summary();
            prop_assert_eq!(summary.requests, tallies.iter().map(|t| t.requests).sum::<u64>());
            if let Some(a) = summary.agreement {
                prop_assert!((0.0..=1.0).contains(&a));
            }
            let mut g = gate();
            g.max_errors = max_errors;
            let judged = verdict(&judge_shadow(&g, &progress, &[], now));
            if summary.errors > max_errors {
                prop_assert_eq!(judged, Some(Verdict::Fail));
            }
            if judged == Some(Verdict::Pass) {
                prop_assert!(summary.requests >= g.requests);
                prop_assert!(summary.errors <= max_errors);
            }
            if summary.requests < g.requests && now < progress.started + 60_000 && summary.errors <= max_errors {
                prop_assert_eq!(judged, None);
            }
        }

        #[test]
        fn a_model_always_agrees_with_itself(values in proptest::collection::vec(-1000i64..1000, 0..50)) {
            let predictions = json!(values);
            let (rows, agreed) = compare_predictions(&predictions, &predictions);
            prop_assert_eq!(rows, values.len() as u64);
            prop_assert_eq!(agreed, rows);
        }
    }
}
