//! A self-contained HTML drift report: the verdicts, and per column a histogram of the
//! reference against the current data (inline SVG, no scripts, no external files).

use std::collections::BTreeMap;
use std::fmt::Write;

use ctflow_core::drift::{ColumnData, bin_fractions, sturges_edges};

use crate::DriftReport;
use crate::reader::Table;

/// Categories shown per categorical column (the most frequent ones).
const TOP_CATEGORIES: usize = 20;
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 140.0;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// A statistic for people: four decimals, or scientific notation when tiny.
pub fn display_number(v: f64) -> String {
    if v.is_infinite() {
        "inf".into()
    } else if v != 0.0 && v.abs() < 1e-4 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// Bars of two distributions over the same labels (fractions of each sample).
fn histogram(labels: &[String], reference: &[f64], current: &[f64]) -> String {
    let top = reference
        .iter()
        .chain(current)
        .fold(0.0f64, |m, v| m.max(*v))
        .max(1e-12);
    let slot = WIDTH / labels.len().max(1) as f64;
    let bar = (slot / 2.0 - 1.0).max(0.5);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" role="img">"#,
        h = HEIGHT + 4.0
    );
    for (i, label) in labels.iter().enumerate() {
        for (k, (values, class)) in [(reference, "ref"), (current, "cur")]
            .into_iter()
            .enumerate()
        {
            let value = values.get(i).copied().unwrap_or(0.0);
            let height = value / top * HEIGHT;
            let x = i as f64 * slot + k as f64 * (bar + 1.0);
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{height:.1}"><title>{label}: {pct:.2}%</title></rect>"#,
                y = HEIGHT - height,
                label = escape(label),
                pct = value * 100.0,
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn column_chart(
    name: &str,
    reference: &Table,
    current: &Table,
    edges: Option<&Vec<f64>>,
) -> String {
    let (Some(r), Some(c)) = (reference.column(name), current.column(name)) else {
        return String::new();
    };
    match (&r.data, &c.data) {
        (ColumnData::Numeric(rv), ColumnData::Numeric(cv)) => {
            let edges = match edges {
                Some(e) => e.clone(),
                None => match sturges_edges(rv, cv) {
                    Ok(e) => e,
                    Err(_) => return String::new(),
                },
            };
            let labels: Vec<String> = edges
                .windows(2)
                .map(|w| format!("[{}, {})", display_number(w[0]), display_number(w[1])))
                .collect();
            histogram(
                &labels,
                &bin_fractions(rv, &edges),
                &bin_fractions(cv, &edges),
            )
        }
        (ColumnData::Categorical(rv), ColumnData::Categorical(cv)) => {
            let mut counts: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
            for v in rv {
                counts.entry(v).or_default().0 += 1.0;
            }
            for v in cv {
                counts.entry(v).or_default().1 += 1.0;
            }
            let mut ranked: Vec<(&str, (f64, f64))> = counts.into_iter().collect();
            ranked.sort_by(|a, b| (b.1.0 + b.1.1).total_cmp(&(a.1.0 + a.1.1)));
            ranked.truncate(TOP_CATEGORIES);
            let (nr, nc) = (rv.len().max(1) as f64, cv.len().max(1) as f64);
            let labels: Vec<String> = ranked.iter().map(|(k, _)| k.to_string()).collect();
            let rf: Vec<f64> = ranked.iter().map(|(_, (r, _))| r / nr).collect();
            let cf: Vec<f64> = ranked.iter().map(|(_, (_, c))| c / nc).collect();
            histogram(&labels, &rf, &cf)
        }
        _ => String::new(),
    }
}

/// The report as one HTML page.
pub fn render_html(
    report: &DriftReport,
    reference: &Table,
    current: &Table,
    title: &str,
) -> String {
    let d = &report.dataset;
    let mut page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}}
.drift{{color:#b00020;font-weight:bold}}.ok{{color:#1b5e20}}rect.ref{{fill:#5c6bc0}}rect.cur{{fill:#ffa726}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style></head><body>
<h1>{title}</h1>
<p class="{verdict_class}">{verdict}: {drifted} of {columns} columns drifted ({share:.0}%, dataset drift at {at:.0}%)</p>
<p>Reference rows: {rr}; current rows: {cr}.<span class="legend"><span style="background:#5c6bc0"></span>reference<span style="background:#ffa726"></span>current</span></p>
<table><tr><th>Column</th><th>Type</th><th>Method</th><th>Statistic</th><th>p-value</th><th>Threshold</th><th>Verdict</th><th>Reference vs current</th></tr>
"#,
        title = escape(title),
        verdict_class = if d.drifted { "drift" } else { "ok" },
        verdict = if d.drifted {
            "Dataset drift"
        } else {
            "No dataset drift"
        },
        drifted = d.drifted_columns,
        columns = d.columns,
        share = d.share * 100.0,
        at = d.drift_share * 100.0,
        rr = report.reference_rows,
        cr = report.current_rows,
    );
    for c in &report.columns {
        let method = c.method.as_str();
        let _ = writeln!(
            page,
            r#"<tr><td>{name}</td><td>{kind}</td><td>{method}</td><td>{stat}</td><td>{p}</td><td>{threshold}</td><td class="{class}">{verdict}</td><td>{chart}</td></tr>"#,
            name = escape(&c.column),
            kind = c.kind,
            stat = display_number(c.statistic),
            p = c.p_value.map(display_number).unwrap_or_else(|| "-".into()),
            threshold = display_number(c.threshold),
            class = if c.drifted { "drift" } else { "ok" },
            verdict = if c.drifted { "drift" } else { "ok" },
            chart = column_chart(&c.column, reference, current, c.bin_edges.as_ref()),
        );
    }
    page.push_str("</table>\n");
    for s in &report.skipped {
        let _ = writeln!(
            page,
            "<p>{}: skipped, {}</p>",
            escape(&s.column),
            escape(&s.reason)
        );
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Column;
    use crate::{DriftOptions, compare};

    #[test]
    fn a_page_with_a_chart_per_column_and_nothing_unescaped() {
        let table = |shift: f64| Table {
            rows: 200,
            columns: vec![
                Column {
                    name: "x<y>".into(),
                    data: ColumnData::Numeric((0..200).map(|i| (i % 40) as f64 + shift).collect()),
                    nulls: 0,
                    infinite: 0,
                },
                Column {
                    name: "kind".into(),
                    data: ColumnData::Categorical(
                        (0..200).map(|i| format!("<c{}>", i % 3)).collect(),
                    ),
                    nulls: 0,
                    infinite: 0,
                },
            ],
        };
        let (reference, current) = (table(0.0), table(10.0));
        let report = compare(&reference, &current, &DriftOptions::default()).expect("comparable");
        let page = render_html(&report, &reference, &current, "drift <report>");
        assert!(page.contains("<h1>drift &lt;report&gt;</h1>"));
        assert!(page.contains("x&lt;y&gt;") && !page.contains("<c1>"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("Dataset drift") || page.contains("No dataset drift"));
        // Self-contained: no scripts, nothing loaded from elsewhere.
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    }
}
