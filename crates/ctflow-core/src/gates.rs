//! Gate evaluation: the CT gate compares the candidate run's metrics with thresholds and
//! with the current champion, MLflow `MetricThreshold` style, and every comparison keeps
//! the numbers it used so the decision can be shown later.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::{Against, InsufficientData, MetricThreshold};

/// A gate's three-way result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every comparison held.
    Pass,
    /// A comparison did not hold.
    Fail,
    /// The numbers needed to decide were missing (no metric, NaN, the champion lacks it).
    Inconclusive,
}

/// What the pipeline does after a gate, once the missing-data policy and dry-run mode
/// are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAction {
    /// Go on to the next gate.
    Proceed,
    /// End the pipeline run here (`GateFailed`).
    Stop,
    /// Wait for a person to approve or reject.
    Pause,
}

/// One comparison of the CT gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The metric compared.
    pub metric: String,
    /// `threshold`, `min_absolute_change` or `min_relative_change`.
    pub check: String,
    /// The candidate's value (`None` when it did not log a usable one).
    pub candidate: Option<f64>,
    /// The champion's value, for the change checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion: Option<f64>,
    /// The value the candidate had to reach.
    pub required: Option<f64>,
    /// `>=` or `<=`.
    pub operator: String,
    /// This comparison's outcome.
    pub verdict: Verdict,
    /// Why a comparison could not be made, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a change check, whose numbers it compared: `training runs` (each model's own
    /// training run, on its own data) or `same data <snapshot>` (both scored by the
    /// evaluation step on one snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
}

/// The candidate and the champion scored by the evaluation step on the same data.
#[derive(Debug, Clone, PartialEq)]
pub struct SameData {
    /// The evaluation snapshot's id.
    pub snapshot: String,
    /// The candidate's evaluation metrics.
    pub candidate: HashMap<String, f64>,
    /// The champion's, when the champion now is the version that was scored.
    pub champion: Option<HashMap<String, f64>>,
    /// Why the champion has no same-data numbers, when it has none.
    pub champion_note: Option<String>,
}

/// The CT gate's outcome and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtEvaluation {
    /// Fail if any comparison failed, else inconclusive if any was, else pass.
    pub verdict: Verdict,
    /// One per configured check, in the spec's order.
    pub comparisons: Vec<Comparison>,
}

fn usable(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// Evaluates the CT gate. `champion` is `None` when the model has no champion yet; then
/// the change checks are skipped and the thresholds alone decide.
pub fn evaluate_ct(
    thresholds: &[MetricThreshold],
    candidate: &HashMap<String, f64>,
    champion: Option<&HashMap<String, f64>>,
) -> CtEvaluation {
    evaluate_ct_with(thresholds, candidate, champion, None)
}

/// Evaluates the CT gate where the pipeline's evaluation step scored both models on the
/// same data: thresholds hold the candidate's training run to its bound; change checks
/// compare the same-data numbers (unless a check says `against: training`).
pub fn evaluate_ct_with(
    thresholds: &[MetricThreshold],
    candidate: &HashMap<String, f64>,
    champion: Option<&HashMap<String, f64>>,
    same_data: Option<&SameData>,
) -> CtEvaluation {
    let mut comparisons = Vec::new();
    for t in thresholds {
        let value = usable(candidate.get(&t.metric).copied());
        let operator = if t.greater_is_better { ">=" } else { "<=" };
        let meets = |v: f64, bound: f64| {
            if t.greater_is_better {
                v >= bound
            } else {
                v <= bound
            }
        };
        let missing_note = || {
            Some(match candidate.get(&t.metric) {
                None => format!("the candidate run logged no metric '{}'", t.metric),
                Some(_) => format!("the candidate's '{}' is not a finite number", t.metric),
            })
        };
        if let Some(bound) = t.threshold {
            let (verdict, note) = match value {
                Some(v) => (
                    if meets(v, bound) {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    },
                    None,
                ),
                None => (Verdict::Inconclusive, missing_note()),
            };
            comparisons.push(Comparison {
                metric: t.metric.clone(),
                check: "threshold".into(),
                candidate: value,
                champion: None,
                required: Some(bound),
                operator: operator.into(),
                verdict,
                note,
                basis: None,
            });
        }
        let on_same_data = same_data.filter(|_| t.against != Some(Against::Training));
        let changes = [
            ("min_absolute_change", t.min_absolute_change),
            ("min_relative_change", t.min_relative_change),
        ];
        for (check, change) in changes {
            let Some(change) = change else { continue };
            let mut comparison = Comparison {
                metric: t.metric.clone(),
                check: check.into(),
                candidate: value,
                champion: None,
                required: None,
                operator: operator.into(),
                verdict: Verdict::Pass,
                note: None,
                basis: Some("training runs".into()),
            };
            let Some(champion) = champion else {
                comparison.note = Some("no champion yet: skipped".into());
                comparisons.push(comparison);
                continue;
            };
            let (value, champion) = match on_same_data {
                None => (value, champion),
                Some(same) => {
                    let short = &same.snapshot[..same.snapshot.len().min(16)];
                    comparison.basis = Some(format!("same data {short}"));
                    let value = usable(same.candidate.get(&t.metric).copied());
                    comparison.candidate = value;
                    let Some(champion) = &same.champion else {
                        comparison.verdict = Verdict::Inconclusive;
                        comparison.note = Some(same.champion_note.clone().unwrap_or_else(|| {
                            "the champion was not scored on the evaluation data".into()
                        }));
                        comparisons.push(comparison);
                        continue;
                    };
                    if value.is_none() {
                        comparison.verdict = Verdict::Inconclusive;
                        comparison.note = Some(format!(
                            "the candidate's evaluation logged no finite metric '{}'",
                            t.metric
                        ));
                        comparisons.push(comparison);
                        continue;
                    }
                    (value, champion)
                }
            };
            let base = usable(champion.get(&t.metric).copied());
            comparison.champion = base;
            match (value, base) {
                (None, _) => {
                    comparison.verdict = Verdict::Inconclusive;
                    comparison.note = missing_note();
                }
                (_, None) => {
                    comparison.verdict = Verdict::Inconclusive;
                    comparison.note = Some(format!(
                        "the champion has no finite metric '{}' to compare with",
                        t.metric
                    ));
                }
                (Some(v), Some(b)) => {
                    let sign = if t.greater_is_better { 1.0 } else { -1.0 };
                    let required = if check == "min_absolute_change" {
                        b + sign * change
                    } else {
                        b + sign * change * b.abs()
                    };
                    comparison.required = Some(required);
                    comparison.verdict = if meets(v, required) {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    };
                }
            }
            comparisons.push(comparison);
        }
    }
    let verdict = if comparisons.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if comparisons
        .iter()
        .any(|c| c.verdict == Verdict::Inconclusive)
    {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    CtEvaluation {
        verdict,
        comparisons,
    }
}

/// Applies the missing-data policy and dry-run (shadow) mode to a verdict.
pub fn action_for(
    verdict: Verdict,
    on_insufficient: InsufficientData,
    dry_run: bool,
) -> GateAction {
    if dry_run {
        return GateAction::Proceed;
    }
    match (verdict, on_insufficient) {
        (Verdict::Pass, _) => GateAction::Proceed,
        (Verdict::Fail, _) => GateAction::Stop,
        (Verdict::Inconclusive, InsufficientData::Pass) => GateAction::Proceed,
        (Verdict::Inconclusive, InsufficientData::Fail) => GateAction::Stop,
        (Verdict::Inconclusive, InsufficientData::Pause) => GateAction::Pause,
    }
}

/// A number as decisions print it: six significant digits without trailing zeros
/// (`0.933333`, `0.9`, `1234.57`), exponent form outside 0.001 to 100,000, as the
/// dashboard shows numbers.
pub fn number_text(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs();
    if !(1e-3..1e5).contains(&magnitude) {
        return format!("{value:.4e}");
    }
    let decimals = (5 - magnitude.log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_print_with_six_significant_digits() {
        for (value, text) in [
            (0.933_333_333_333_333_3, "0.933333"),
            (0.8, "0.8"),
            (1.0, "1"),
            (1234.5678, "1234.57"),
            (-0.05, "-0.05"),
            (0.0, "0"),
            (123_456.0, "1.2346e5"),
        ] {
            assert_eq!(number_text(value), text, "{value}");
        }
    }

    proptest! {
        #[test]
        fn printed_numbers_read_back_close(value in -1e5f64..1e5) {
            let back: f64 = number_text(value).parse().expect("a number");
            prop_assert!((back - value).abs() <= value.abs() * 1e-4 + 1e-12, "{} -> {}", value, back);
        }
    }

    fn metrics(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn threshold(
        metric: &str,
        t: Option<f64>,
        abs: Option<f64>,
        rel: Option<f64>,
        greater: bool,
    ) -> MetricThreshold {
        MetricThreshold {
            metric: metric.into(),
            threshold: t,
            min_absolute_change: abs,
            min_relative_change: rel,
            greater_is_better: greater,
            against: None,
        }
    }

    #[test]
    fn same_data_numbers_decide_where_stale_training_numbers_disagree() {
        // The champion's training run scored 1.0 on its old, easy data; on today's data
        // it scores 0.4 and the candidate 0.95.
        let gate = [threshold("acc", Some(0.9), Some(0.0), None, true)];
        let training = metrics(&[("acc", 0.95)]);
        let champion_training = metrics(&[("acc", 1.0)]);
        let stale = evaluate_ct(&gate, &training, Some(&champion_training));
        assert_eq!(stale.verdict, Verdict::Fail);
        let same = SameData {
            snapshot: "0123456789abcdef0123".into(),
            candidate: metrics(&[("acc", 0.95)]),
            champion: Some(metrics(&[("acc", 0.4)])),
            champion_note: None,
        };
        let fair = evaluate_ct_with(&gate, &training, Some(&champion_training), Some(&same));
        assert_eq!(fair.verdict, Verdict::Pass);
        let change = &fair.comparisons[1];
        assert_eq!((change.candidate, change.champion), (Some(0.95), Some(0.4)));
        assert_eq!(change.basis.as_deref(), Some("same data 0123456789abcdef"));
        assert_eq!(fair.comparisons[0].basis, None);
        // `against: training` keeps the old comparison.
        let mut old = gate.clone();
        old[0].against = Some(Against::Training);
        let kept = evaluate_ct_with(&old, &training, Some(&champion_training), Some(&same));
        assert_eq!(kept.verdict, Verdict::Fail);
        assert_eq!(kept.comparisons[1].basis.as_deref(), Some("training runs"));
        // A champion that was not scored cannot be compared on the same data.
        let unscored = SameData {
            champion: None,
            champion_note: Some("champion version 4 was not scored".into()),
            ..same
        };
        let open = evaluate_ct_with(&gate, &training, Some(&champion_training), Some(&unscored));
        assert_eq!(open.verdict, Verdict::Inconclusive);
        assert_eq!(
            open.comparisons[1].note.as_deref(),
            Some("champion version 4 was not scored")
        );
    }

    #[test]
    fn thresholds_in_both_directions() {
        let acc = [threshold("acc", Some(0.9), None, None, true)];
        assert_eq!(
            evaluate_ct(&acc, &metrics(&[("acc", 0.9)]), None).verdict,
            Verdict::Pass
        );
        assert_eq!(
            evaluate_ct(&acc, &metrics(&[("acc", 0.89)]), None).verdict,
            Verdict::Fail
        );
        let loss = [threshold("loss", Some(0.2), None, None, false)];
        assert_eq!(
            evaluate_ct(&loss, &metrics(&[("loss", 0.2)]), None).verdict,
            Verdict::Pass
        );
        assert_eq!(
            evaluate_ct(&loss, &metrics(&[("loss", 0.3)]), None).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn changes_against_the_champion() {
        let abs = [threshold("acc", None, Some(0.01), None, true)];
        let champion = metrics(&[("acc", 0.90)]);
        let better = evaluate_ct(&abs, &metrics(&[("acc", 0.915)]), Some(&champion));
        assert_eq!(better.verdict, Verdict::Pass);
        assert_eq!(better.comparisons[0].champion, Some(0.90));
        let required = better.comparisons[0].required.expect("a bound");
        assert!((required - 0.91).abs() < 1e-12);
        assert_eq!(
            evaluate_ct(&abs, &metrics(&[("acc", 0.905)]), Some(&champion)).verdict,
            Verdict::Fail
        );
        // Lower is better: the candidate must be at least 10% below the champion.
        let rel = [threshold("rmse", None, None, Some(0.1), false)];
        let champion = metrics(&[("rmse", 2.0)]);
        assert_eq!(
            evaluate_ct(&rel, &metrics(&[("rmse", 1.8)]), Some(&champion)).verdict,
            Verdict::Pass
        );
        assert_eq!(
            evaluate_ct(&rel, &metrics(&[("rmse", 1.85)]), Some(&champion)).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn no_champion_means_thresholds_decide() {
        let gate = [threshold("acc", Some(0.5), Some(0.0), None, true)];
        let result = evaluate_ct(&gate, &metrics(&[("acc", 0.6)]), None);
        assert_eq!(result.verdict, Verdict::Pass);
        assert_eq!(
            result.comparisons[1].note.as_deref(),
            Some("no champion yet: skipped")
        );
    }

    #[test]
    fn missing_numbers_are_inconclusive() {
        let gate = [threshold("acc", Some(0.5), Some(0.0), None, true)];
        let missing = evaluate_ct(&gate, &metrics(&[]), Some(&metrics(&[("acc", 0.4)])));
        assert_eq!(missing.verdict, Verdict::Inconclusive);
        let nan = evaluate_ct(&gate, &metrics(&[("acc", f64::NAN)]), None);
        assert_eq!(nan.verdict, Verdict::Inconclusive);
        assert!(
            nan.comparisons[0]
                .note
                .as_deref()
                .unwrap_or("")
                .contains("not a finite")
        );
        let champion_lacks = evaluate_ct(&gate, &metrics(&[("acc", 0.6)]), Some(&metrics(&[])));
        assert_eq!(champion_lacks.verdict, Verdict::Inconclusive);
        // A failure anywhere outranks an inconclusive comparison.
        let gate = [
            threshold("acc", Some(0.9), None, None, true),
            threshold("f1", Some(0.1), None, None, true),
        ];
        assert_eq!(
            evaluate_ct(&gate, &metrics(&[("acc", 0.5)]), None).verdict,
            Verdict::Fail
        );
        assert_eq!(evaluate_ct(&[], &metrics(&[]), None).verdict, Verdict::Pass);
    }

    #[test]
    fn policies_and_dry_run() {
        use InsufficientData::*;
        assert_eq!(
            action_for(Verdict::Inconclusive, Fail, false),
            GateAction::Stop
        );
        assert_eq!(
            action_for(Verdict::Inconclusive, Pass, false),
            GateAction::Proceed
        );
        assert_eq!(
            action_for(Verdict::Inconclusive, Pause, false),
            GateAction::Pause
        );
        assert_eq!(action_for(Verdict::Fail, Pass, false), GateAction::Stop);
        assert_eq!(action_for(Verdict::Fail, Fail, true), GateAction::Proceed);
    }

    proptest! {
        /// Raising the candidate's value never turns a greater-is-better pass into a fail.
        #[test]
        fn monotone_in_the_candidate(v in -1e6f64..1e6, bump in 0f64..1e6, base in -1e6f64..1e6,
                                     t in -1e6f64..1e6, abs in 0f64..10.0, rel in 0f64..1.0) {
            let gate = [threshold("m", Some(t), Some(abs), Some(rel), true)];
            let champion = metrics(&[("m", base)]);
            let low = evaluate_ct(&gate, &metrics(&[("m", v)]), Some(&champion)).verdict;
            let high = evaluate_ct(&gate, &metrics(&[("m", v + bump)]), Some(&champion)).verdict;
            prop_assert!(!(low == Verdict::Pass && high == Verdict::Fail));
        }
    }
}
