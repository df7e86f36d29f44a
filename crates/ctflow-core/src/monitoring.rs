//! Live model quality: ground-truth labels joined to the inference log's predictions,
//! and the metrics computed per model version over a window of prediction time.
//!
//! A label names a scored row by its request id and the row's place in the request (0
//! for single-row requests). Labels arrive long after their predictions, so a window is
//! always about when the prediction was made, never when its label came.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A live metric a pipeline can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveMetric {
    /// Share of labelled rows whose prediction equals the label.
    Accuracy,
    /// Macro-averaged F1 over every class seen in labels or predictions (scikit-learn's
    /// `f1_score(average="macro")`).
    F1,
    /// Root mean squared error of numeric predictions.
    Rmse,
    /// Mean absolute error of numeric predictions.
    Mae,
}

/// The names `LiveMetric::parse` accepts.
pub const LIVE_METRICS: [&str; 4] = ["accuracy", "f1", "rmse", "mae"];

impl LiveMetric {
    /// The metric of a name as written in a pipeline (case-insensitive).
    pub fn parse(text: &str) -> Result<LiveMetric, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "accuracy" => Ok(LiveMetric::Accuracy),
            "f1" => Ok(LiveMetric::F1),
            "rmse" => Ok(LiveMetric::Rmse),
            "mae" => Ok(LiveMetric::Mae),
            other => Err(format!(
                "'{other}' is not a live metric (one of {})",
                LIVE_METRICS.join(", ")
            )),
        }
    }

    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveMetric::Accuracy => "accuracy",
            LiveMetric::F1 => "f1",
            LiveMetric::Rmse => "rmse",
            LiveMetric::Mae => "mae",
        }
    }

    /// Whether a larger value means a better model.
    pub fn higher_is_better(self) -> bool {
        matches!(self, LiveMetric::Accuracy | LiveMetric::F1)
    }

    /// The metric over (prediction, label) pairs; `None` when no pair can be scored
    /// (none at all, or no numeric pair for an error metric).
    pub fn score(self, pairs: &[(Outcome, Outcome)]) -> Option<f64> {
        match self {
            LiveMetric::Accuracy => {
                if pairs.is_empty() {
                    return None;
                }
                let right = pairs.iter().filter(|(p, l)| p == l).count();
                Some(right as f64 / pairs.len() as f64)
            }
            LiveMetric::F1 => macro_f1(pairs),
            LiveMetric::Rmse => mean_of(pairs, |p, l| (p - l) * (p - l)).map(f64::sqrt),
            LiveMetric::Mae => mean_of(pairs, |p, l| (p - l).abs()),
        }
    }
}

fn mean_of(pairs: &[(Outcome, Outcome)], term: impl Fn(f64, f64) -> f64) -> Option<f64> {
    let mut sum = 0.0;
    let mut count = 0usize;
    for (prediction, label) in pairs {
        if let (Some(p), Some(l)) = (prediction.number(), label.number()) {
            sum += term(p, l);
            count += 1;
        }
    }
    (count > 0).then(|| sum / count as f64)
}

fn macro_f1(pairs: &[(Outcome, Outcome)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let classes: BTreeSet<&Outcome> = pairs.iter().flat_map(|(p, l)| [p, l]).collect();
    let mut total = 0.0;
    for class in &classes {
        let mut true_positive = 0usize;
        let mut predicted = 0usize;
        let mut actual = 0usize;
        for (prediction, label) in pairs {
            let p = prediction == *class;
            let l = label == *class;
            true_positive += usize::from(p && l);
            predicted += usize::from(p);
            actual += usize::from(l);
        }
        // F1 = 2TP / (2TP + FP + FN); a class is always predicted or present here.
        total += 2.0 * true_positive as f64 / (predicted + actual) as f64;
    }
    Some(total / classes.len() as f64)
}

/// A prediction or a label: numbers compare as numbers (`1`, `1.0` and `"1"` are the
/// same class), anything else as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A number (booleans are 1 and 0).
    Number(f64),
    /// Any other value, as text.
    Text(String),
}

impl Outcome {
    /// The outcome of a JSON value: numbers and booleans as numbers, numeric text as a
    /// number, other text as itself, anything else as its JSON text.
    pub fn from_json(value: &Value) -> Outcome {
        match value {
            Value::Number(n) => n
                .as_f64()
                .map_or(Outcome::Text(n.to_string()), Outcome::Number),
            Value::Bool(b) => Outcome::Number(f64::from(u8::from(*b))),
            Value::String(s) => Outcome::from_text(s),
            other => Outcome::Text(other.to_string()),
        }
    }

    /// The outcome of text (a CSV cell, a logged text prediction).
    pub fn from_text(text: &str) -> Outcome {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("true") {
            return Outcome::Number(1.0);
        }
        if trimmed.eq_ignore_ascii_case("false") {
            return Outcome::Number(0.0);
        }
        match trimmed.parse::<f64>() {
            Ok(n) if n.is_finite() => Outcome::Number(n),
            _ => Outcome::Text(text.to_string()),
        }
    }

    /// The value as a number, when it is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Outcome::Number(n) => Some(*n),
            Outcome::Text(_) => None,
        }
    }

    /// The outcome as JSON (how labels are stored and sent).
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Number(n) => serde_json::Number::from_f64(*n)
                .map_or_else(|| Value::String(n.to_string()), Value::Number),
            Outcome::Text(s) => Value::String(s.clone()),
        }
    }
}

// Equality and order on the bits of the number (labels are finite; NaN never equals
// itself, which is right for a prediction that is NaN).
impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Number(a), Outcome::Number(b)) => a == b,
            (Outcome::Text(a), Outcome::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Outcome {}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Outcome) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Outcome {
    fn cmp(&self, other: &Outcome) -> std::cmp::Ordering {
        match (self, other) {
            (Outcome::Number(a), Outcome::Number(b)) => a.total_cmp(b),
            (Outcome::Number(_), Outcome::Text(_)) => std::cmp::Ordering::Less,
            (Outcome::Text(_), Outcome::Number(_)) => std::cmp::Ordering::Greater,
            (Outcome::Text(a), Outcome::Text(b)) => a.cmp(b),
        }
    }
}

/// The longest label text kept.
pub const MAX_LABEL_TEXT: usize = 1000;

/// Checks a label as it arrives: a number, a bool or text up to `MAX_LABEL_TEXT` bytes.
pub fn check_label(value: &Value) -> Result<(), String> {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(()),
        Value::Bool(_) => Ok(()),
        Value::String(s) if s.is_empty() => Err("a label must not be empty".into()),
        Value::String(s) if s.len() > MAX_LABEL_TEXT => {
            Err(format!("a label is at most {MAX_LABEL_TEXT} bytes of text"))
        }
        Value::String(_) => Ok(()),
        other => Err(format!("a label is a number, a bool or text, not {other}")),
    }
}

/// One logged prediction, as read from the inference log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedPrediction {
    /// The request's id.
    pub request_id: String,
    /// The row's place in its request.
    pub row: u32,
    /// The model version that answered (empty when it was not served from the registry);
    /// shared, since a log holds a handful of versions for a million rows.
    pub version: Arc<str>,
    /// When the request arrived, epoch ms.
    pub timestamp_ms: i64,
    /// What the model predicted.
    pub prediction: Outcome,
    /// The request's time from arrival to answer, ms (the same for each of its rows).
    pub latency_ms: f64,
}

/// One ground-truth label.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The request it is for.
    pub request_id: String,
    /// The row of that request.
    pub row: u32,
    /// The true outcome.
    pub label: Outcome,
}

/// Predictions joined to their labels, per version, for one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    /// Per version: (prediction, label) of every labelled row predicted in the window.
    pub pairs: BTreeMap<String, Vec<(Outcome, Outcome)>>,
    /// Per version: rows predicted in the window, labelled or not.
    pub predictions: BTreeMap<String, u64>,
    /// Labels whose request row is in no prediction given (in or out of the window).
    pub unmatched: u64,
    /// Per version: the latency of every request (its first row) made in the window, ms.
    pub latencies: BTreeMap<String, Vec<f64>>,
}

impl Joined {
    /// The labelled rows of a version.
    pub fn labelled(&self, version: &str) -> u64 {
        self.pairs.get(version).map_or(0, |p| p.len() as u64)
    }
}

/// Joins labels to predictions. Predictions made at `from_ms <= t <= to_ms` count for the
/// window; a label matching a prediction outside it is still matched (not unmatched),
/// only not scored. A request row logged twice (a client reusing its id) counts once, the
/// first logged.
pub fn join<'a>(
    predictions: impl IntoIterator<Item = &'a LoggedPrediction>,
    labels: &[Label],
    from_ms: i64,
    to_ms: i64,
) -> Joined {
    let predictions = predictions.into_iter();
    let mut by_row: HashMap<(&str, u32), &LoggedPrediction> =
        HashMap::with_capacity(predictions.size_hint().0);
    let mut joined = Joined::default();
    let mut counts: Vec<(String, u64)> = Vec::new();
    let mut latencies: Vec<(String, Vec<f64>)> = Vec::new();
    let mut pairs: Vec<(String, Vec<(Outcome, Outcome)>)> = Vec::new();
    for prediction in predictions {
        let key = (prediction.request_id.as_str(), prediction.row);
        if let std::collections::hash_map::Entry::Vacant(slot) = by_row.entry(key) {
            slot.insert(prediction);
            if (from_ms..=to_ms).contains(&prediction.timestamp_ms) {
                *per_version(&mut counts, &prediction.version) += 1;
                if prediction.row == 0 {
                    per_version(&mut latencies, &prediction.version).push(prediction.latency_ms);
                }
            }
        }
    }
    let mut seen: HashSet<(&str, u32)> = HashSet::with_capacity(labels.len());
    for label in labels {
        let key = (label.request_id.as_str(), label.row);
        if !seen.insert(key) {
            continue;
        }
        match by_row.get(&key) {
            None => joined.unmatched += 1,
            Some(prediction) if (from_ms..=to_ms).contains(&prediction.timestamp_ms) => {
                per_version(&mut pairs, &prediction.version)
                    .push((prediction.prediction.clone(), label.label.clone()));
            }
            Some(_) => {}
        }
    }
    joined.predictions = counts.into_iter().collect();
    joined.latencies = latencies.into_iter().collect();
    joined.pairs = pairs.into_iter().collect();
    joined
}

/// A version's entry, without allocating its name again once it has one (a pass sees
/// the same few versions a million times).
fn per_version<'m, T: Default>(entries: &'m mut Vec<(String, T)>, version: &str) -> &'m mut T {
    let at = match entries.iter().position(|(v, _)| v == version) {
        Some(at) => at,
        None => {
            entries.push((version.to_string(), T::default()));
            entries.len() - 1
        }
    };
    &mut entries[at].1
}

/// The `q`-th percentile (0 to 100) of `values`, interpolated linearly between the two
/// nearest ranks as numpy's default does; `None` for no values. NaNs are left out.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = (rank.ceil() as usize).min(sorted.len() - 1);
    let low = sorted[below];
    let high = sorted[above];
    Some(low + (high - low) * (rank - below as f64))
}

/// What a performance trigger concludes from one version's live numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum PerformanceVerdict {
    /// Fewer labelled rows than the trigger wants.
    TooFewLabels {
        /// Labelled rows in the window.
        labelled: u64,
    },
    /// The metric is on the right side of the threshold.
    Holds {
        /// The metric's value.
        value: f64,
    },
    /// Live quality crossed the threshold: retrain.
    Degraded {
        /// The metric's value.
        value: f64,
    },
}

/// A performance trigger's rule: with at least `min_labels` labelled rows, the metric
/// is degraded when it is below `below` (or above `above`). No scorable pair counts as
/// too few labels.
pub fn judge_performance(
    metric: LiveMetric,
    below: Option<f64>,
    above: Option<f64>,
    min_labels: u64,
    pairs: &[(Outcome, Outcome)],
) -> PerformanceVerdict {
    let labelled = pairs.len() as u64;
    let value = match metric.score(pairs) {
        Some(value) if labelled >= min_labels.max(1) => value,
        _ => return PerformanceVerdict::TooFewLabels { labelled },
    };
    let degraded = below.is_some_and(|b| value < b) || above.is_some_and(|a| value > a);
    if degraded {
        PerformanceVerdict::Degraded { value }
    } else {
        PerformanceVerdict::Holds { value }
    }
}

/// What the monitor reports when live quality crossed a performance trigger's
/// threshold; the server turns it into a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceEvent {
    /// The pipeline (from the request path).
    #[serde(default)]
    pub pipeline: String,
    /// The performance trigger's index in the pipeline's triggers.
    pub trigger_index: usize,
    /// The metric's name.
    pub metric: String,
    /// Its live value.
    pub value: f64,
    /// The `below` threshold crossed, if that is the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// The `above` threshold crossed, if that is the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// The served version judged.
    pub version: String,
    /// Labelled rows behind the value.
    pub labels: u64,
    /// The window's length, ms.
    pub window_ms: i64,
    /// When the monitor judged, epoch ms.
    pub detected_at: i64,
}

impl PerformanceEvent {
    /// Refuses an event that does not say what crossed what.
    pub fn validate(&self) -> Result<(), String> {
        LiveMetric::parse(&self.metric)?;
        if !self.value.is_finite() {
            return Err("the live value must be a finite number".into());
        }
        if self.window_ms <= 0 {
            return Err("windowMs must be positive".into());
        }
        let crossed = self.below.is_some_and(|b| self.value < b)
            || self.above.is_some_and(|a| self.value > a);
        if !crossed {
            return Err(format!(
                "{} = {} crosses no threshold given: that is no degradation",
                self.metric, self.value
            ));
        }
        Ok(())
    }

    /// The trigger event it records: kind `performance`, the numbers in its detail and
    /// tags (with the monitoring run that logged them, when given).
    pub fn into_trigger(self, monitoring_run: Option<String>) -> crate::trigger::TriggerEvent {
        let mut trigger =
            crate::trigger::TriggerEvent::new(&self.pipeline, "performance", self.dedupe_key());
        trigger.tags.extend([
            ("performance.metric".to_string(), self.metric.clone()),
            ("performance.value".to_string(), self.value.to_string()),
            ("performance.version".to_string(), self.version.clone()),
        ]);
        if let Some(run) = monitoring_run {
            trigger
                .tags
                .insert("performance.monitoring_run".into(), run);
        }
        trigger.detail = serde_json::to_value(&self).unwrap_or(Value::Null);
        trigger
    }

    /// The dedupe key: one run per trigger, version and window-long stretch of time, so
    /// quality that stays low retrains at most once per window while the same version
    /// serves.
    pub fn dedupe_key(&self) -> String {
        let stretch = self.detected_at.div_euclid(self.window_ms.max(1));
        format!(
            "performance:{}:{}:{stretch}",
            self.trigger_index, self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn n(x: f64) -> Outcome {
        Outcome::Number(x)
    }

    fn prediction(id: &str, row: u32, version: &str, t: i64, p: f64) -> LoggedPrediction {
        LoggedPrediction {
            request_id: id.into(),
            row,
            version: version.into(),
            timestamp_ms: t,
            prediction: n(p),
            latency_ms: t as f64 / 10.0,
        }
    }

    #[test]
    fn percentiles_interpolate_as_numpy() {
        // numpy.percentile([1, 2, 3, 4], [50, 99, 0, 100]) = 2.5, 3.97, 1, 4.
        let values = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&values, 50.0), Some(2.5));
        let p99 = percentile(&values, 99.0).expect("values");
        assert!((p99 - 3.97).abs() < 1e-12, "{p99}");
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&values, 100.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[f64::NAN, 7.0], 50.0), Some(7.0));
    }

    fn label(id: &str, row: u32, l: f64) -> Label {
        Label {
            request_id: id.into(),
            row,
            label: n(l),
        }
    }

    #[test]
    fn outcomes_compare_numbers_as_numbers() {
        assert_eq!(Outcome::from_json(&json!(1)), Outcome::from_text("1.0"));
        assert_eq!(Outcome::from_json(&json!(true)), Outcome::from_text("1"));
        assert_eq!(Outcome::from_text("True"), n(1.0));
        assert_eq!(
            Outcome::from_json(&json!("setosa")),
            Outcome::Text("setosa".into())
        );
        assert_ne!(Outcome::from_text("setosa"), Outcome::from_text("Setosa"));
        assert_eq!(
            Outcome::from_json(&json!([1, 2])),
            Outcome::Text("[1,2]".into())
        );
        assert_eq!(n(2.0).to_json(), json!(2.0));
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label(&json!(1)).is_ok());
        assert!(check_label(&json!("cat")).is_ok());
        assert!(check_label(&json!(false)).is_ok());
        assert!(check_label(&json!(null)).is_err());
        assert!(check_label(&json!("")).is_err());
        assert!(check_label(&json!({"a": 1})).is_err());
        assert!(check_label(&json!("x".repeat(MAX_LABEL_TEXT + 1))).is_err());
    }

    #[test]
    fn metrics_match_scikit_learn() {
        // sklearn: accuracy_score([0,1,2,2], [0,2,2,1]) = 0.5,
        // f1_score(y_true, y_pred, average="macro") = (1 + 0 + 0.5) / 3.
        let pairs = vec![
            (n(0.0), n(0.0)),
            (n(2.0), n(1.0)),
            (n(2.0), n(2.0)),
            (n(1.0), n(2.0)),
        ];
        assert_eq!(LiveMetric::Accuracy.score(&pairs), Some(0.5));
        let f1 = LiveMetric::F1.score(&pairs).expect("pairs");
        assert!((f1 - 0.5).abs() < 1e-12, "{f1}");
        // mean_squared_error([1, 2], [2, 4]) = 2.5; mean_absolute_error = 1.5.
        let numbers = vec![(n(2.0), n(1.0)), (n(4.0), n(2.0))];
        let rmse = LiveMetric::Rmse.score(&numbers).expect("numbers");
        assert!((rmse - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(LiveMetric::Mae.score(&numbers), Some(1.5));
        assert_eq!(
            LiveMetric::Rmse.score(&[(Outcome::Text("a".into()), n(1.0))]),
            None
        );
        assert_eq!(LiveMetric::Accuracy.score(&[]), None);
    }

    #[test]
    fn join_scores_the_window_and_counts_unknown_labels() {
        let predictions = vec![
            prediction("a", 0, "1", 100, 1.0),
            prediction("a", 1, "1", 100, 0.0),
            prediction("b", 0, "2", 200, 2.0),
            prediction("old", 0, "1", 10, 1.0),
            // A reused id: the first logged row is the one labels join.
            prediction("b", 0, "2", 300, 9.0),
        ];
        let labels = vec![
            label("a", 0, 1.0),
            label("a", 1, 1.0),
            label("b", 0, 2.0),
            label("old", 0, 0.0),
            label("nobody", 0, 1.0),
            label("a", 2, 1.0),
            // A repeated label counts once.
            label("b", 0, 2.0),
        ];
        let joined = join(&predictions, &labels, 50, 250);
        assert_eq!(joined.unmatched, 2);
        assert_eq!(joined.labelled("1"), 2);
        assert_eq!(joined.pairs["2"], vec![(n(2.0), n(2.0))]);
        assert_eq!(joined.predictions["1"], 2);
        assert_eq!(joined.predictions["2"], 1);
        // One latency per request in the window (its first row).
        assert_eq!(joined.latencies["1"], vec![10.0]);
        assert_eq!(joined.latencies["2"], vec![20.0]);
        assert_eq!(LiveMetric::Accuracy.score(&joined.pairs["1"]), Some(0.5));
    }

    #[test]
    fn performance_needs_enough_labels_and_a_crossed_threshold() {
        let right = (n(1.0), n(1.0));
        let wrong = (n(1.0), n(0.0));
        let pairs = vec![right.clone(), wrong.clone(), wrong.clone(), wrong];
        let judge = |min, pairs: &[(Outcome, Outcome)]| {
            judge_performance(LiveMetric::Accuracy, Some(0.9), None, min, pairs)
        };
        assert_eq!(
            judge(5, &pairs),
            PerformanceVerdict::TooFewLabels { labelled: 4 }
        );
        assert_eq!(
            judge(4, &pairs),
            PerformanceVerdict::Degraded { value: 0.25 }
        );
        assert_eq!(judge(1, &[right]), PerformanceVerdict::Holds { value: 1.0 });
        assert_eq!(
            judge(0, &[]),
            PerformanceVerdict::TooFewLabels { labelled: 0 }
        );
        let errors = vec![(n(3.0), n(1.0))];
        assert_eq!(
            judge_performance(LiveMetric::Mae, None, Some(1.0), 1, &errors),
            PerformanceVerdict::Degraded { value: 2.0 }
        );
    }

    #[test]
    fn performance_events_say_what_crossed_and_dedupe_per_window() {
        let event = PerformanceEvent {
            pipeline: "iris".into(),
            trigger_index: 1,
            metric: "accuracy".into(),
            value: 0.4,
            below: Some(0.9),
            above: None,
            version: "3".into(),
            labels: 200,
            window_ms: 3_600_000,
            detected_at: 7_200_000 + 5,
        };
        assert!(event.validate().is_ok());
        assert_eq!(event.dedupe_key(), "performance:1:3:2");
        let trigger = event.clone().into_trigger(Some("run-7".into()));
        assert_eq!(
            (trigger.kind.as_str(), trigger.dedupe_key.as_str()),
            ("performance", "performance:1:3:2")
        );
        assert_eq!(trigger.tags["performance.monitoring_run"], "run-7");
        assert_eq!(trigger.detail["value"], json!(0.4));
        let later = PerformanceEvent {
            detected_at: 7_200_000 + 3_599_999,
            ..event.clone()
        };
        assert_eq!(later.dedupe_key(), event.dedupe_key());
        let fine = PerformanceEvent {
            value: 0.95,
            ..event.clone()
        };
        assert!(fine.validate().is_err());
        let unknown = PerformanceEvent {
            metric: "auc".into(),
            ..event
        };
        assert!(unknown.validate().is_err());
    }

    fn outcomes() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            (0u8..4).prop_map(|c| Outcome::Number(f64::from(c))),
            "[a-c]".prop_map(Outcome::Text),
        ]
    }

    proptest! {
        #[test]
        fn classification_metrics_stay_between_zero_and_one(
            pairs in proptest::collection::vec((outcomes(), outcomes()), 1..60)
        ) {
            for metric in [LiveMetric::Accuracy, LiveMetric::F1] {
                let value = metric.score(&pairs).expect("pairs");
                prop_assert!((0.0..=1.0).contains(&value), "{metric:?} {value}");
            }
        }

        #[test]
        fn percentiles_grow_with_q_and_stay_within_the_values(
            values in proptest::collection::vec(-1e6f64..1e6, 1..50),
            a in 0.0f64..100.0,
            b in 0.0f64..100.0,
        ) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let p_low = percentile(&values, low).expect("values");
            let p_high = percentile(&values, high).expect("values");
            prop_assert!(p_low <= p_high + 1e-9);
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(p_low >= min - 1e-9 && p_high <= max + 1e-9);
        }

        #[test]
        fn perfect_predictions_score_perfectly(labels in proptest::collection::vec(outcomes(), 1..60)) {
            let pairs: Vec<_> = labels.iter().map(|l| (l.clone(), l.clone())).collect();
            prop_assert_eq!(LiveMetric::Accuracy.score(&pairs), Some(1.0));
            prop_assert_eq!(LiveMetric::F1.score(&pairs), Some(1.0));
            if labels.iter().any(|l| l.number().is_some()) {
                prop_assert_eq!(LiveMetric::Rmse.score(&pairs), Some(0.0));
                prop_assert_eq!(LiveMetric::Mae.score(&pairs), Some(0.0));
            }
        }

        #[test]
        fn every_distinct_label_is_scored_outside_or_unmatched(
            rows in proptest::collection::vec((0u8..20, 0u32..2, 0i64..100, 0u8..3), 0..40),
            labelled in proptest::collection::vec((0u8..25, 0u32..2, 0u8..3), 0..40),
            from in 0i64..100,
            span in 0i64..100,
        ) {
            let predictions: Vec<_> = rows
                .iter()
                .map(|(id, row, t, p)| prediction(&id.to_string(), *row, "v", *t, f64::from(*p)))
                .collect();
            let labels: Vec<_> = labelled
                .iter()
                .map(|(id, row, l)| label(&id.to_string(), *row, f64::from(*l)))
                .collect();
            let joined = join(&predictions, &labels, from, from + span);
            let distinct: BTreeSet<_> = labelled.iter().map(|(id, row, _)| (*id, *row)).collect();
            let known: BTreeSet<_> = rows.iter().map(|(id, row, _, _)| (*id, *row)).collect();
            let unmatched = distinct.iter().filter(|k| !known.contains(k)).count() as u64;
            prop_assert_eq!(joined.unmatched, unmatched);
            prop_assert!(joined.labelled("v") <= distinct.len() as u64 - unmatched);
            let in_window = predictions
                .iter()
                .filter(|p| (from..=from + span).contains(&p.timestamp_ms))
                .count() as u64;
            prop_assert!(joined.predictions.get("v").copied().unwrap_or(0) <= in_window);
        }
    }
}
