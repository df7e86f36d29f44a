//! Trigger events: what fired, with the key that makes one event start at most one
//! pipeline run, however often it is reported (restarts, redelivery, retried webhooks).

use std::collections::BTreeMap;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of trigger, as recorded on a pipeline run.
pub const KINDS: &[&str] = &[
    "schedule",
    "data",
    "drift",
    "webhook",
    "performance",
    "manual",
    "rerun",
];

/// One trigger event, ready to be recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerEvent {
    /// The pipeline it starts a run of.
    pub pipeline: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// Unique per pipeline: a second event with the same key starts nothing.
    pub dedupe_key: String,
    /// Project parameters this event sets (over the pipeline's own).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The scheduled time (epoch ms) of a schedule tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_time: Option<i64>,
    /// The files that fired a data trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Tags for the run (webhook payload fields), without their `ctflow.` prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Who fired a manual trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Anything else worth keeping (drift statistics, webhook fields).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl TriggerEvent {
    /// An event with nothing but its pipeline, kind and dedupe key.
    pub fn new(pipeline: &str, kind: &str, dedupe_key: String) -> TriggerEvent {
        TriggerEvent {
            pipeline: pipeline.to_string(),
            kind: kind.to_string(),
            dedupe_key,
            parameters: BTreeMap::new(),
            logical_time: None,
            files: Vec::new(),
            tags: BTreeMap::new(),
            user: None,
            detail: Value::Null,
        }
    }
}

/// A data trigger's event for a batch of new files. The key hashes the sorted paths, so
/// the same batch reported twice records once.
pub fn data_event(pipeline: &str, trigger_index: usize, files: Vec<String>) -> TriggerEvent {
    use sha2::Digest;
    let mut files = files;
    files.sort();
    files.dedup();
    let mut hasher = sha2::Sha256::new();
    for file in &files {
        hasher.update(file.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hex::encode(hasher.finalize());
    let mut event = TriggerEvent::new(
        pipeline,
        "data",
        format!("data:{trigger_index}:{}", &digest[..32]),
    );
    event.files = files;
    event
}

/// The contract between the drift watcher and the controller: the watcher reports a
/// drift test that crossed its threshold on a snapshot of the current data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftEvent {
    /// Filled from the URL when posted to a pipeline's `drift-events` endpoint.
    #[serde(default)]
    pub pipeline: String,
    /// The index of the drift trigger in the pipeline spec.
    #[serde(default)]
    pub trigger_index: usize,
    /// The drift test that judged the data (`ks`, `psi`, ...).
    pub method: String,
    /// The overall statistic (the largest over the features).
    pub statistic: f64,
    /// The value the statistic crossed.
    pub threshold: f64,
    /// Per-feature statistics.
    #[serde(default)]
    pub features: BTreeMap<String, f64>,
    /// Rows in the current data.
    pub rows: u64,
    /// Identifies the data judged (a content hash, or the newest file and its size), so
    /// the same snapshot never triggers twice.
    pub snapshot: String,
    /// Epoch ms.
    pub detected_at: i64,
    /// What the data was compared with: the reference file, or the champion version and
    /// the training snapshot it learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl DriftEvent {
    /// Refuses an event that names no snapshot, has non-finite numbers or is no drift.
    pub fn validate(&self) -> Result<(), String> {
        if self.snapshot.trim().is_empty() {
            return Err("a drift event needs the snapshot it judged".into());
        }
        if !self.statistic.is_finite() || !self.threshold.is_finite() {
            return Err("drift statistic and threshold must be finite numbers".into());
        }
        if self.statistic < self.threshold {
            return Err(format!(
                "the statistic {} is below the threshold {}: that is no drift",
                self.statistic, self.threshold
            ));
        }
        Ok(())
    }

    /// The trigger event it records: kind `drift`, deduplicated by trigger and snapshot.
    pub fn into_trigger(self) -> TriggerEvent {
        let key = format!("drift:{}:{}", self.trigger_index, self.snapshot);
        let mut event = TriggerEvent::new(&self.pipeline, "drift", key);
        event.detail = serde_json::to_value(&self).unwrap_or(Value::Null);
        event
    }
}

/// Checks a `sha256=<hex>` HMAC signature of `body` (GitHub's `X-Hub-Signature-256`
/// form) in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Takes run parameters out of a webhook payload: name -> JSON pointer. Strings are used
/// as they are, other JSON values as their JSON text; missing fields are reported.
pub fn webhook_parameters(
    payload: &Value,
    pointers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, pointer) in pointers {
        let value = payload.pointer(pointer).ok_or_else(|| {
            format!("the payload has no field at '{pointer}' (parameter '{name}')")
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `sha256=<hex>` signature of `body`, as a CI system computes it.
    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn data_events_key_on_their_files() {
        let a = data_event("p", 0, vec!["/d/b.csv".into(), "/d/a.csv".into()]);
        let b = data_event(
            "p",
            0,
            vec!["/d/a.csv".into(), "/d/b.csv".into(), "/d/a.csv".into()],
        );
        assert_eq!(a.dedupe_key, b.dedupe_key);
        assert_eq!(a.files, vec!["/d/a.csv", "/d/b.csv"]);
        assert_ne!(a.dedupe_key, data_event("p", 1, a.files.clone()).dedupe_key);
        assert_ne!(
            a.dedupe_key,
            data_event("p", 0, vec!["/d/a.csv".into()]).dedupe_key
        );
    }

    #[test]
    fn signatures() {
        // The example from GitHub's webhook documentation.
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify_signature(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &sig
        ));
        assert!(!verify_signature(b"other", b"Hello, World!", &sig));
        assert!(!verify_signature(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            &sig
        ));
        assert!(!verify_signature(b"k", b"b", "sha1=abcd"));
        assert!(!verify_signature(b"k", b"b", "sha256=zz"));
    }

    #[test]
    fn parameters_from_payload() {
        let payload = json!({"after": "abc123", "repository": {"name": "iris"}, "n": 3});
        let pointers = BTreeMap::from([
            ("commit".to_string(), "/after".to_string()),
            ("repo".to_string(), "/repository/name".to_string()),
            ("n".to_string(), "/n".to_string()),
        ]);
        let params = webhook_parameters(&payload, &pointers).expect("all present");
        assert_eq!(params["commit"], "abc123");
        assert_eq!(params["repo"], "iris");
        assert_eq!(params["n"], "3");
        let missing = BTreeMap::from([("x".to_string(), "/nope".to_string())]);
        assert!(
            webhook_parameters(&payload, &missing)
                .unwrap_err()
                .contains("/nope")
        );
    }

    #[test]
    fn drift_events_dedupe_on_their_snapshot() {
        let event = DriftEvent {
            pipeline: "iris".into(),
            trigger_index: 2,
            method: "psi".into(),
            statistic: 0.31,
            threshold: 0.2,
            features: BTreeMap::from([("sepal_length".to_string(), 0.31)]),
            rows: 600,
            snapshot: "sha256:ab".into(),
            detected_at: 1,
            reference: Some("ref.csv".into()),
        };
        assert!(event.validate().is_ok());
        let trigger = event.clone().into_trigger();
        assert_eq!(trigger.dedupe_key, "drift:2:sha256:ab");
        assert_eq!(trigger.detail["statistic"], json!(0.31));
        let below = DriftEvent {
            statistic: 0.1,
            ..event
        };
        assert!(below.validate().is_err());
    }
}
