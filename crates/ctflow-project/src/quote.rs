//! Shell quoting with the semantics of Python's `shlex.quote`, which MLflow uses.

/// Quotes `value` for a POSIX shell: safe strings stay as they are, anything else is put in
/// single quotes with embedded single quotes spelled `'"'"'`.
pub fn shell_quote(value: &str) -> String {
    if value.is_empty() {
        return "''".to_string();
    }
    let safe = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\"'\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_python_shlex_quote() {
        assert_eq!(shell_quote("0.05"), "0.05");
        assert_eq!(shell_quote("/data/x.csv"), "/data/x.csv");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("x;y"), "'x;y'");
    }

    proptest! {
        /// A quoted value, read back by the shell's rules for single quotes, is the value.
        #[test]
        fn quoting_round_trips(value in ".{0,30}") {
            let quoted = shell_quote(&value);
            let mut out = String::new();
            let mut in_single = false;
            let mut in_double = false;
            for c in quoted.chars() {
                match (c, in_single, in_double) {
                    ('\'', false, false) => in_single = true,
                    ('\'', true, _) => in_single = false,
                    ('"', false, false) => in_double = true,
                    ('"', false, true) => in_double = false,
                    (c, _, _) => out.push(c),
                }
            }
            prop_assert!(!in_single && !in_double);
            prop_assert_eq!(out, value);
        }
    }
}
