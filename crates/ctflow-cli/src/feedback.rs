//! `ctflow feedback send`: ground-truth labels from a CSV file (`request_id,label`, and
//! optionally `row` for multi-row requests) to the server, which joins them to the
//! inference log's predictions for live metrics and performance triggers.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ctflow_client::ct::{FeedbackLabel, FeedbackOutcome};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::{ClientArgs, OutputFormat};

/// The labels sent per request (the server takes at most 10,000).
const BATCH: usize = 5000;

#[derive(Subcommand, Debug)]
pub enum FeedbackCommand {
    /// Send labels from a CSV file with a header naming request_id and label (and
    /// optionally row); `-` reads standard input. The whole file is checked before
    /// anything is sent. Sending a label again changes nothing; a different label for
    /// the same request replaces the first.
    Send {
        /// The registered model whose predictions the labels are for.
        #[arg(long, short = 'm')]
        model: String,
        /// The CSV file.
        file: PathBuf,
    },
}

pub async fn run(command: FeedbackCommand, args: &ClientArgs) -> Result<()> {
    match command {
        FeedbackCommand::Send { model, file } => send(args, &model, &file).await,
    }
}

/// A CSV cell as the label's JSON: numbers and booleans as themselves, else text.
fn label_value(text: &str) -> Value {
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i64>() {
        return json!(n);
    }
    if let Ok(x) = trimmed.parse::<f64>()
        && x.is_finite()
    {
        return json!(x);
    }
    match trimmed.to_ascii_lowercase().as_str() {
        "true" => json!(true),
        "false" => json!(false),
        _ => Value::String(text.to_string()),
    }
}

/// Reads and checks every line; the first problem is reported with its line number.
fn parse_labels(text: &str) -> Result<Vec<FeedbackLabel>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_at), Some(label_at)) = (find("request_id"), find("label")) else {
        bail!(
            "the CSV header must name request_id and label (and optionally row), got: {}",
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let row_at = find("row");
    let mut labels = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let record = record.with_context(|| format!("line {line}"))?;
        let request_id = record.get(id_at).unwrap_or("").trim().to_string();
        if !ctflow_core::inference::valid_request_id(&request_id) {
            bail!(
                "line {line}: request_id must be 1 to 128 visible ASCII characters, got '{request_id}'"
            );
        }
        let label = label_value(record.get(label_at).unwrap_or(""));
        ctflow_core::monitoring::check_label(&label)
            .map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
        let row = match row_at.and_then(|at| record.get(at)).map(str::trim) {
            None | Some("") => 0,
            Some(text) => text
                .parse::<u32>()
                .with_context(|| format!("line {line}: row must be a row number, got '{text}'"))?,
        };
        labels.push(FeedbackLabel {
            request_id,
            row,
            label,
        });
    }
    Ok(labels)
}

async fn send(args: &ClientArgs, model: &str, file: &PathBuf) -> Result<()> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let labels = parse_labels(&text)?;
    let client = crate::client::connect(&args.tracking_uri)?;
    let bar = if args.output == OutputFormat::Table {
        ProgressBar::new(labels.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} labels")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut total = FeedbackOutcome::default();
    for batch in labels.chunks(BATCH) {
        let outcome = client
            .send_feedback(model, batch)
            .await
            .with_context(|| format!("sending labels for model '{model}'"))?;
        total.stored += outcome.stored;
        total.unchanged += outcome.unchanged;
        total.replaced += outcome.replaced;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            json!({ "model": model, "sent": labels.len(), "stored": total.stored,
                    "unchanged": total.unchanged, "replaced": total.replaced })
        ),
        OutputFormat::Table => println!(
            "{} labels for {model}: {} new, {} unchanged, {} replaced",
            labels.len(),
            total.stored,
            total.unchanged,
            total.replaced
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_and_checked_line_by_line() {
        let labels = parse_labels("label,request_id,row\n1,a,\nsetosa,b,2\n0.5,c,0\n").unwrap();
        let seen: Vec<(&str, u32, &Value)> = labels
            .iter()
            .map(|l| (l.request_id.as_str(), l.row, &l.label))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", 0, &json!(1)),
                ("b", 2, &json!("setosa")),
                ("c", 0, &json!(0.5))
            ]
        );
        assert_eq!(label_value("True"), json!(true));
        let error = parse_labels("request_id,label\na,1\n,2\n").unwrap_err();
        assert!(error.to_string().starts_with("line 3:"), "{error}");
        let error = parse_labels("id,label\na,1\n").unwrap_err();
        assert!(
            error.to_string().contains("must name request_id and label"),
            "{error}"
        );
        let error = parse_labels("request_id,label,row\na,1,-1\n").unwrap_err();
        assert!(error.to_string().contains("line 2: row"), "{error}");
        assert!(parse_labels("request_id,label\na,\n").is_err());
    }
}
