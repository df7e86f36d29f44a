//! Reading tabular data for drift checks: CSV with a header row, and Parquet. A CSV column
//! is numeric when every non-null value parses as a number, else categorical; a Parquet
//! column is numeric when its Arrow type is (integers, floats, decimals); callers can force
//! either. Nulls (empty, `NA`, `null`, `None`, `NaN`, Arrow nulls) and infinite numbers are
//! counted and reported, never silently dropped.

use std::collections::BTreeSet;
use std::path::Path;

use ctflow_core::drift::ColumnData;
use serde::Serialize;

use crate::Error;

/// Spellings of a missing value (compared case-insensitively).
const NULLS: &[&str] = &["", "na", "n/a", "null", "none", "nan"];

fn is_null(value: &str) -> bool {
    let v = value.trim();
    NULLS.iter().any(|n| v.eq_ignore_ascii_case(n))
}

/// One column as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
    /// Rows with no value.
    pub nulls: usize,
    /// Numeric rows holding +/-infinity (excluded from the statistics).
    pub infinite: usize,
}

/// What was left out of a column, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnCounts {
    pub rows: usize,
    pub nulls: usize,
    pub infinite: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub rows: usize,
    pub columns: Vec<Column>,
}

/// How to type columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Typing {
    pub categorical: BTreeSet<String>,
    pub numeric: BTreeSet<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads a data file: Parquet by its extension (`.parquet`, `.pq`), else CSV.
pub fn read_table(path: &Path, typing: &Typing) -> Result<Table, Error> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet" | "pq") => read_parquet(path, typing),
        _ => read_csv(path, typing),
    }
}

/// Reads a Parquet file (any compression the writer used: snappy, zstd, lz4, gzip).
pub fn read_parquet(path: &Path, typing: &Typing) -> Result<Table, Error> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;
    let file_error = |message: String| Error::Read {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| file_error(e.to_string()))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| file_error(e.to_string()))?;
    for name in typing.numeric.iter().chain(&typing.categorical) {
        if schema.field_with_name(name).is_err() {
            return Err(file_error(format!("there is no column '{name}' to type")));
        }
    }
    let numeric_type = |t: &DataType| t.is_numeric();
    let mut numbers: Vec<Vec<Option<f64>>> = vec![Vec::new(); schema.fields().len()];
    let mut texts: Vec<Vec<Option<String>>> = vec![Vec::new(); schema.fields().len()];
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| file_error(e.to_string()))?;
        rows += batch.num_rows();
        for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
            if numeric_type(field.data_type()) {
                let cast = arrow_cast::cast(column, &DataType::Float64)
                    .map_err(|e| file_error(format!("column '{}': {e}", field.name())))?;
                let values = cast.as_primitive::<arrow_array::types::Float64Type>();
                numbers[i]
                    .extend((0..values.len()).map(|k| values.is_valid(k).then(|| values.value(k))));
            } else {
                let cast = arrow_cast::cast(column, &DataType::Utf8).map_err(|e| {
                    file_error(format!(
                        "column '{}' has the type {} which cannot be compared: {e}",
                        field.name(),
                        field.data_type()
                    ))
                })?;
                let values = cast.as_string::<i32>();
                texts[i].extend(
                    (0..values.len())
                        .map(|k| values.is_valid(k).then(|| values.value(k).to_string())),
                );
            }
        }
    }
    if rows == 0 {
        return Err(file_error("the file has no rows".into()));
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name().to_string();
        let column = if numeric_type(field.data_type()) {
            let raw = std::mem::take(&mut numbers[i]);
            let nulls = raw.iter().filter(|v| v.is_none_or(|x| x.is_nan())).count();
            let present: Vec<f64> = raw.into_iter().flatten().filter(|x| !x.is_nan()).collect();
            if typing.categorical.contains(&name) {
                Column {
                    name,
                    data: ColumnData::Categorical(present.iter().map(|v| v.to_string()).collect()),
                    nulls,
                    infinite: 0,
                }
            } else {
                let infinite = present.iter().filter(|v| v.is_infinite()).count();
                Column {
                    name,
                    data: ColumnData::Numeric(
                        present.into_iter().filter(|v| v.is_finite()).collect(),
                    ),
                    nulls,
                    infinite,
                }
            }
        } else {
            let raw = std::mem::take(&mut texts[i]);
            let nulls = raw.iter().filter(|v| v.is_none()).count();
            let present: Vec<String> = raw.into_iter().flatten().collect();
            // Text columns are typed as CSV columns are, except that a Parquet string
            // column stays categorical unless declared numeric.
            let mut forced = typing.clone();
            if !typing.numeric.contains(&name) {
                forced.categorical.insert(name.clone());
            }
            let mut column = type_column(name, present, &forced).map_err(file_error)?;
            column.nulls += nulls;
            column
        };
        columns.push(column);
    }
    Ok(Table { rows, columns })
}

/// Reads a CSV file with a header row.
pub fn read_csv(path: &Path, typing: &Typing) -> Result<Table, Error> {
    let file_error = |message: String| Error::Read {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| file_error(e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| file_error(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(file_error("the file has no header row".into()));
    }
    let mut seen = BTreeSet::new();
    for h in &headers {
        if !seen.insert(h) {
            return Err(file_error(format!("the column '{h}' appears twice")));
        }
    }
    let mut raw: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| file_error(e.to_string()))?;
        for (i, value) in record.iter().enumerate() {
            raw[i].push(value.to_string());
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(file_error("the file has a header but no rows".into()));
    }
    for name in typing.numeric.iter().chain(&typing.categorical) {
        if !headers.contains(name) {
            return Err(file_error(format!("there is no column '{name}' to type")));
        }
    }
    let columns = headers
        .into_iter()
        .zip(raw)
        .map(|(name, values)| type_column(name, values, typing))
        .collect::<Result<Vec<_>, String>>()
        .map_err(file_error)?;
    Ok(Table { rows, columns })
}

fn type_column(name: String, values: Vec<String>, typing: &Typing) -> Result<Column, String> {
    let nulls = values.iter().filter(|v| is_null(v)).count();
    let present: Vec<&str> = values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !is_null(v))
        .collect();
    let parsed: Vec<Option<f64>> = present.iter().map(|v| v.parse::<f64>().ok()).collect();
    let all_numbers = parsed.iter().all(Option::is_some);
    let numeric = if typing.categorical.contains(&name) {
        false
    } else if typing.numeric.contains(&name) {
        if !all_numbers {
            let bad = present
                .iter()
                .zip(&parsed)
                .find(|(_, p)| p.is_none())
                .map(|(v, _)| *v)
                .unwrap_or_default();
            return Err(format!(
                "column '{name}' was declared numeric but holds '{bad}'"
            ));
        }
        true
    } else {
        all_numbers
    };
    if numeric {
        let numbers: Vec<f64> = parsed.into_iter().flatten().collect();
        let infinite = numbers.iter().filter(|v| v.is_infinite()).count();
        let finite: Vec<f64> = numbers.into_iter().filter(|v| v.is_finite()).collect();
        Ok(Column {
            name,
            data: ColumnData::Numeric(finite),
            nulls,
            infinite,
        })
    } else {
        Ok(Column {
            name,
            data: ColumnData::Categorical(present.into_iter().map(str::to_string).collect()),
            nulls,
            infinite: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writable");
        path
    }

    #[test]
    fn types_nulls_and_infinities() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            &dir,
            "a.csv",
            "x,kind,code\n1.5,a,1\nNA,b,2\ninf,,3\n-2,a,\n",
        );
        let table = read_csv(&path, &Typing::default()).expect("readable");
        assert_eq!(table.rows, 4);
        let x = table.column("x").expect("x");
        assert_eq!(x.data, ColumnData::Numeric(vec![1.5, -2.0]));
        assert_eq!((x.nulls, x.infinite), (1, 1));
        let kind = table.column("kind").expect("kind");
        assert_eq!(
            kind.data,
            ColumnData::Categorical(vec!["a".into(), "b".into(), "a".into()])
        );
        assert_eq!(kind.nulls, 1);
        let typing = Typing {
            categorical: ["code".to_string()].into(),
            ..Typing::default()
        };
        let forced = read_csv(&path, &typing).expect("readable");
        assert!(matches!(
            forced.column("code").expect("code").data,
            ColumnData::Categorical(_)
        ));
    }

    #[test]
    fn parquet_files_read_like_csv() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.parquet");
        let batch = RecordBatch::try_from_iter([
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(1.5),
                    None,
                    Some(f64::INFINITY),
                    Some(f64::NAN),
                    Some(-2.0),
                ])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            ),
            (
                "kind",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("a"),
                    Some("c"),
                ])) as ArrayRef,
            ),
        ])
        .expect("a batch");
        let file = std::fs::File::create(&path).expect("writable");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        let table = read_table(&path, &Typing::default()).expect("readable");
        assert_eq!(table.rows, 5);
        let x = table.column("x").expect("x");
        assert_eq!(x.data, ColumnData::Numeric(vec![1.5, -2.0]));
        assert_eq!((x.nulls, x.infinite), (2, 1));
        assert_eq!(
            table.column("n").expect("n").data,
            ColumnData::Numeric(vec![1.0, 2.0, 3.0, 4.0, 5.0])
        );
        let kind = table.column("kind").expect("kind");
        assert_eq!(
            kind.data,
            ColumnData::Categorical(vec!["a".into(), "b".into(), "a".into(), "c".into()])
        );
        assert_eq!(kind.nulls, 1);
        let not_parquet = write(&dir, "b.parquet", "x\n1\n");
        assert!(read_table(&not_parquet, &Typing::default()).is_err());
    }

    #[test]
    fn bad_files_are_explained() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = write(&dir, "empty.csv", "");
        assert!(
            read_csv(&empty, &Typing::default())
                .unwrap_err()
                .to_string()
                .contains("no header")
        );
        let header_only = write(&dir, "h.csv", "a,b\n");
        assert!(
            read_csv(&header_only, &Typing::default())
                .unwrap_err()
                .to_string()
                .contains("no rows")
        );
        let ragged = write(&dir, "r.csv", "a,b\n1,2\n3\n");
        assert!(read_csv(&ragged, &Typing::default()).is_err());
        let twice = write(&dir, "t.csv", "a,a\n1,2\n");
        assert!(
            read_csv(&twice, &Typing::default())
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let typing = Typing {
            numeric: ["b".to_string()].into(),
            ..Typing::default()
        };
        let words = write(&dir, "w.csv", "a,b\n1,x\n");
        assert!(
            read_csv(&words, &typing)
                .unwrap_err()
                .to_string()
                .contains("declared numeric but holds 'x'")
        );
        let missing = dir.path().join("nope.csv");
        assert!(read_csv(&missing, &Typing::default()).is_err());
    }
}
