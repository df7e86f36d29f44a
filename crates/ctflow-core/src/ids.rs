//! Identifier formats: MLflow run ids (32 lowercase hex), logged-model ids (`m-` + 32 hex)
//! and generated run names (`<adjective>-<animal>-<n>`).

use uuid::Uuid;

/// A new MLflow run id: 32 lowercase hex digits.
pub fn new_run_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// A new logged-model id: `m-` and 32 hex digits.
pub fn new_logged_model_id() -> String {
    format!("m-{}", Uuid::new_v4().simple())
}

/// A new dataset id: 32 hex digits.
pub fn new_dataset_id() -> String {
    Uuid::new_v4().simple().to_string()
}

const ADJECTIVES: &[&str] = &[
    "able", "bold", "brave", "bright", "calm", "clean", "clever", "crisp", "dapper", "eager",
    "fair", "gentle", "glad", "grand", "happy", "honest", "jolly", "keen", "kind", "lively",
    "lucky", "merry", "neat", "nimble", "polite", "proud", "quick", "quiet", "rare", "sharp",
    "shy", "silky", "smart", "sunny", "swift", "tidy", "upbeat", "vivid", "warm", "witty",
];
const ANIMALS: &[&str] = &[
    "ant", "bat", "bear", "bee", "cat", "cod", "crab", "crow", "deer", "dog", "dove", "eel", "elk",
    "finch", "fox", "frog", "goat", "hare", "hawk", "horse", "jay", "koi", "lark", "lynx", "mole",
    "moth", "newt", "owl", "ox", "panda", "pig", "ram", "seal", "shrew", "slug", "snail", "swan",
    "toad", "trout", "wolf", "wren", "yak",
];

/// A fresh human-friendly run name such as `swift-owl-417`.
pub fn new_run_name() -> String {
    let bytes = *Uuid::new_v4().as_bytes();
    let adjective = ADJECTIVES[bytes[0] as usize % ADJECTIVES.len()];
    let animal = ANIMALS[bytes[1] as usize % ANIMALS.len()];
    let number = u16::from_le_bytes([bytes[2], bytes[3]]) % 999 + 1;
    format!("{adjective}-{animal}-{number}")
}

/// Parses an experiment id the way MLflow does: it must be an integer.
pub fn parse_experiment_id(raw: &str) -> crate::Result<i64> {
    raw.trim().parse::<i64>().map_err(|_| {
        crate::MlflowError::invalid(format!(
            "Invalid experiment ID '{raw}'. Experiment ID must be a valid integer."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_32_lowercase_hex() {
        let id = new_run_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, new_run_id());
    }

    #[test]
    fn logged_model_ids_have_the_m_prefix() {
        let id = new_logged_model_id();
        assert!(id.starts_with("m-"));
        assert_eq!(id.len(), 34);
    }

    #[test]
    fn run_names_have_three_parts_and_a_number_in_range() {
        for _ in 0..200 {
            let name = new_run_name();
            let parts: Vec<&str> = name.split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            let n: u16 = parts[2].parse().unwrap();
            assert!((1..=999).contains(&n));
        }
    }

    #[test]
    fn experiment_ids_must_be_integers() {
        assert_eq!(parse_experiment_id("12").unwrap(), 12);
        let err = parse_experiment_id("abc").unwrap_err();
        assert!(err.message.contains("must be a valid integer"));
    }
}
