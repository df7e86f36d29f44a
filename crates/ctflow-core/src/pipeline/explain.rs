//! serde's messages about a pipeline document, said for a person writing YAML: which
//! form a field takes, and the field or value they probably meant.

/// The text between backticks in a serde message, in order.
fn quoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Edit distance between two short names: insertions, deletions, substitutions and swaps
/// of two neighbouring letters (`retyr` is one slip from `retry`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between the first i letters of a and the first j of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The option closest to `word`, when it is close enough to be a slip (a third of the
/// word's letters at most, and at least one), compared without case.
pub(super) fn did_you_mean<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    options
        .iter()
        .map(|o| (distance(&lower, &o.to_ascii_lowercase()), *o))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// What a Rust type name in serde's "expected ..." means in a YAML file.
fn form_of(expected: &str) -> Option<&'static str> {
    Some(match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" => "text",
        "a sequence" => "a list",
        "a map" => "a mapping of names to values",
        _ => return None,
    })
}

/// serde's message about one field, said plainly: an unknown field or value names the
/// nearest valid one and lists them all; a value of the wrong type says the form it
/// takes. Other messages (ours, from custom parsers) pass through.
pub(super) fn type_error(message: &str) -> String {
    let message = message.trim();
    for kind in ["unknown field", "unknown variant"] {
        if message.starts_with(kind) {
            let names = quoted(message);
            let Some((given, options)) = names.split_first() else {
                return message.to_string();
            };
            let what = if kind == "unknown field" {
                "field"
            } else {
                "value"
            };
            let hint = did_you_mean(given, options)
                .map(|o| format!(": did you mean '{o}'?"))
                .unwrap_or_default();
            return if options.is_empty() {
                format!("unknown {what} '{given}'{hint}")
            } else {
                format!(
                    "unknown {what} '{given}'{hint} (valid: {})",
                    options.join(", ")
                )
            };
        }
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.rsplit_once(", expected ")
    {
        let got = got.replace('`', "");
        return match form_of(expected.trim()) {
            Some(form) => format!("must be {form}; got {got}"),
            None => format!("must be {}; got {got}", expected.trim()),
        };
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_the_nearest_valid_one() {
        assert_eq!(
            type_error(
                "unknown field `threshhold`, expected one of `metric`, `threshold`, `minAbsoluteChange`"
            ),
            "unknown field 'threshhold': did you mean 'threshold'? (valid: metric, threshold, minAbsoluteChange)"
        );
        assert_eq!(
            type_error("unknown variant `Forbidd`, expected one of `Allow`, `Forbid`, `Replace`"),
            "unknown value 'Forbidd': did you mean 'Forbid'? (valid: Allow, Forbid, Replace)"
        );
        assert_eq!(
            type_error("unknown field `zzz`, expected `a` or `b`"),
            "unknown field 'zzz' (valid: a, b)"
        );
    }

    #[test]
    fn wrong_types_say_the_form_a_field_takes() {
        assert_eq!(
            type_error("invalid value: integer `-1`, expected u32"),
            "must be a whole number, 0 or more; got integer -1"
        );
        assert_eq!(
            type_error("invalid type: string \"high\", expected f64"),
            "must be a number; got string \"high\""
        );
        assert_eq!(type_error("'x' is not a duration"), "'x' is not a duration");
    }

    #[test]
    fn slips_are_close_and_other_words_are_not() {
        assert_eq!(did_you_mean("retyr", &["retry", "timeout"]), Some("retry"));
        assert_eq!(
            did_you_mean("Timeout", &["retry", "timeout"]),
            Some("timeout")
        );
        assert_eq!(did_you_mean("banana", &["retry", "timeout"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
