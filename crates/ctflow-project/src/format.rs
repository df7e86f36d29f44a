//! Entry-point command templates: Python `str.format` with named fields, as MLflow uses.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Replaces `{name}` with `values[name]`; `{{` and `}}` are literal braces. A field that is
/// not in `values`, or an unbalanced brace, is an error.
pub fn render_template(template: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(Error::Template(format!("unclosed '{{' in '{template}'")));
                        }
                    }
                }
                let value = values.get(name.trim()).ok_or_else(|| {
                    Error::Template(format!(
                        "the command uses {{{name}}}, which is not a parameter of the entry point"
                    ))
                })?;
                out.push_str(value);
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => return Err(Error::Template(format!("single '}}' in '{template}'"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_named_fields() {
        let v = values(&[("C", "0.05"), ("data", "'/d x'")]);
        assert_eq!(
            render_template("python train.py -C {C} {data}", &v).unwrap(),
            "python train.py -C 0.05 '/d x'"
        );
        assert_eq!(
            render_template("echo {{literal}} {C}", &v).unwrap(),
            "echo {literal} 0.05"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        let v = values(&[("C", "1")]);
        assert!(matches!(
            render_template("x {missing}", &v),
            Err(Error::Template(_))
        ));
        assert!(matches!(
            render_template("x {C", &v),
            Err(Error::Template(_))
        ));
        assert!(matches!(
            render_template("x }", &v),
            Err(Error::Template(_))
        ));
    }
}
