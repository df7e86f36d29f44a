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

/// A column's values as read, row-aligned with the other columns, before typing.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    /// Numbers from a numeric Parquet column; `None` is a null (NaN counts as one).
    Numbers(Vec<Option<f64>>),
    /// Text; `None` is a null. With `infer`, the column is numeric when every value
    /// parses (CSV); without, it stays categorical unless declared numeric (Parquet).
    Texts {
        values: Vec<Option<String>>,
        infer: bool,
    },
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Texts { values, .. } => values.len(),
        }
    }

    fn into_texts(self) -> (Vec<Option<String>>, bool) {
        match self {
            Values::Numbers(v) => (
                v.into_iter().map(|x| x.map(|x| x.to_string())).collect(),
                true,
            ),
            Values::Texts { values, infer } => (values, infer),
        }
    }

    fn keep(&mut self, mask: &[bool]) {
        fn retain<T>(values: &mut Vec<T>, mask: &[bool]) {
            let mut row = 0;
            values.retain(|_| {
                row += 1;
                mask.get(row - 1).copied().unwrap_or(false)
            });
        }
        match self {
            Values::Numbers(v) => retain(v, mask),
            Values::Texts { values, .. } => retain(values, mask),
        }
    }
}

/// A file as read, every column row-aligned: rows can still be selected (a window) and
/// files concatenated before the columns are typed.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTable {
    pub rows: usize,
    names: Vec<String>,
    values: Vec<Values>,
}

impl RawTable {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Appends `other`'s rows; both must have the same columns in the same order.
    pub fn append(&mut self, other: RawTable) -> Result<(), Error> {
        if self.names != other.names {
            return Err(Error::Schema(format!(
                "the current files have different columns: [{}] and [{}]",
                self.names.join(", "),
                other.names.join(", ")
            )));
        }
        self.rows += other.rows;
        for (into, from) in self.values.iter_mut().zip(other.values) {
            match (into, from) {
                (Values::Numbers(a), Values::Numbers(b)) => a.extend(b),
                (Values::Texts { values, infer }, from) => {
                    let (more, more_infer) = from.into_texts();
                    values.extend(more);
                    *infer = *infer && more_infer;
                }
                (into @ Values::Numbers(_), from) => {
                    let (mut values, infer) =
                        std::mem::replace(into, Values::Numbers(Vec::new())).into_texts();
                    let (more, more_infer) = from.into_texts();
                    values.extend(more);
                    *into = Values::Texts {
                        values,
                        infer: infer && more_infer,
                    };
                }
            }
        }
        Ok(())
    }

    /// SHA-256 (hex) of the column names and every value, row by row: two tables with
    /// the same content have the same digest, whatever files they came from.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for name in &self.names {
            hasher.update(name.as_bytes());
            hasher.update([0u8]);
        }
        for row in 0..self.rows {
            for values in &self.values {
                match values {
                    Values::Numbers(v) => match v.get(row).copied().flatten() {
                        Some(x) => hasher.update(x.to_string().as_bytes()),
                        None => hasher.update([1u8]),
                    },
                    Values::Texts { values, .. } => match values.get(row) {
                        Some(Some(text)) => hasher.update(text.as_bytes()),
                        _ => hasher.update([1u8]),
                    },
                }
                hasher.update([0u8]);
            }
        }
        hex::encode(hasher.finalize())
    }

    /// The columns with MLflow's column-spec types, as a training snapshot records them.
    pub fn schema(&self) -> Vec<ctflow_core::data::Column> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(name, values)| {
                let kind = match values {
                    Values::Numbers(_) => "double",
                    Values::Texts { values, .. } => ctflow_core::data::infer_kind(
                        values.iter().take(10_000).flatten().map(String::as_str),
                    ),
                };
                ctflow_core::data::Column {
                    name: name.clone(),
                    kind: kind.to_string(),
                }
            })
            .collect()
    }

    /// Leaves out the first `rows` rows (what a training snapshot's window cut).
    pub fn skip_first(&mut self, rows: usize) {
        self.keep_last(self.rows.saturating_sub(rows));
    }

    /// Keeps the last `rows` rows.
    pub fn keep_last(&mut self, rows: usize) {
        if rows >= self.rows {
            return;
        }
        let mask: Vec<bool> = (0..self.rows).map(|i| i >= self.rows - rows).collect();
        self.keep(&mask);
    }

    /// Keeps the rows whose flag is set.
    pub fn keep(&mut self, mask: &[bool]) {
        for values in &mut self.values {
            values.keep(mask);
        }
        self.rows = self.values.first().map_or(0, Values::len);
    }

    /// Removes a column (a window's timestamp column is not compared).
    pub fn drop_column(&mut self, name: &str) {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            self.names.remove(i);
            self.values.remove(i);
        }
    }

    /// A column's values as epoch milliseconds: RFC 3339, `YYYY-MM-DD[ HH:MM:SS[.f]]`
    /// (UTC), or numbers of seconds since the epoch; `None` for nulls.
    pub fn timestamps(&self, column: &str) -> Result<Vec<Option<i64>>, Error> {
        let Some(i) = self.names.iter().position(|n| n == column) else {
            return Err(Error::Options(format!(
                "there is no timestamp column '{column}'"
            )));
        };
        match &self.values[i] {
            Values::Numbers(v) => Ok(v.iter().map(|x| x.map(seconds_to_ms)).collect()),
            Values::Texts { values, .. } => values
                .iter()
                .map(|v| match v {
                    None => Ok(None),
                    Some(text) => parse_timestamp(text).map(Some).ok_or_else(|| {
                        Error::Options(format!(
                            "column '{column}' holds '{text}', which is not a timestamp (RFC 3339, YYYY-MM-DD HH:MM:SS, a date, or seconds since the epoch)"
                        ))
                    }),
                })
                .collect(),
        }
    }

    /// Types every column (see [`Typing`]).
    pub fn into_table(self, typing: &Typing) -> Result<Table, String> {
        for name in typing.numeric.iter().chain(&typing.categorical) {
            if !self.names.contains(name) {
                return Err(format!("there is no column '{name}' to type"));
            }
        }
        let mut columns = Vec::with_capacity(self.names.len());
        for (name, values) in self.names.into_iter().zip(self.values) {
            columns.push(match values {
                Values::Numbers(raw) => {
                    let nulls = raw.iter().filter(|v| v.is_none()).count();
                    let present: Vec<f64> = raw.into_iter().flatten().collect();
                    if typing.categorical.contains(&name) {
                        Column {
                            name,
                            data: ColumnData::Categorical(
                                present.iter().map(|v| v.to_string()).collect(),
                            ),
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
                }
                Values::Texts { values, infer } => {
                    let nulls = values.iter().filter(|v| v.is_none()).count();
                    let present: Vec<String> = values.into_iter().flatten().collect();
                    let declared_numeric = typing.numeric.contains(&name);
                    let categorical =
                        typing.categorical.contains(&name) || (!infer && !declared_numeric);
                    type_column(name, present, nulls, categorical, declared_numeric)?
                }
            });
        }
        Ok(Table {
            rows: self.rows,
            columns,
        })
    }
}

fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis());
    }
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(seconds_to_ms)
}

/// Which rows of the current data a check looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Window {
    /// Every row of the files read.
    #[default]
    All,
    /// The last N rows, in file order.
    LastRows(usize),
    /// Rows whose timestamp is within `span_ms` of the newest one; the timestamp column
    /// itself is not compared.
    Time { column: String, span_ms: i64 },
}

impl Window {
    /// Applies the window; returns how many rows it left out.
    pub fn apply(&self, table: &mut RawTable) -> Result<usize, Error> {
        let before = table.rows;
        match self {
            Window::All => {}
            Window::LastRows(rows) => table.keep_last(*rows),
            Window::Time { column, span_ms } => {
                let stamps = table.timestamps(column)?;
                let Some(newest) = stamps.iter().flatten().max().copied() else {
                    return Err(Error::Options(format!(
                        "the timestamp column '{column}' has no values"
                    )));
                };
                let start = newest.saturating_sub(*span_ms);
                let mask: Vec<bool> = stamps
                    .iter()
                    .map(|t| t.is_some_and(|t| t > start))
                    .collect();
                table.keep(&mask);
                table.drop_column(column);
            }
        }
        Ok(before - table.rows)
    }
}

/// Reads a data file: Parquet by its extension (`.parquet`, `.pq`), else CSV.
pub fn read_table(path: &Path, typing: &Typing) -> Result<Table, Error> {
    read_raw(path)?
        .into_table(typing)
        .map_err(|message| Error::Read {
            path: path.display().to_string(),
            message,
        })
}

/// Reads a data file without typing its columns.
pub fn read_raw(path: &Path) -> Result<RawTable, Error> {
    let name = path.display().to_string();
    let file_error = |message: String| Error::Read {
        path: name.clone(),
        message,
    };
    if is_parquet(&name) {
        let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
        read_parquet(file, &name)
    } else {
        let reader = csv_builder()
            .from_path(path)
            .map_err(|e| file_error(e.to_string()))?;
        read_csv(reader, &name)
    }
}

/// Reads data fetched into memory (from object storage); `name` gives the format.
pub fn read_raw_bytes(bytes: bytes::Bytes, name: &str) -> Result<RawTable, Error> {
    if is_parquet(name) {
        read_parquet(bytes, name)
    } else {
        read_csv(csv_builder().from_reader(std::io::Cursor::new(bytes)), name)
    }
}

fn is_parquet(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".parquet") || lower.ends_with(".pq")
}

fn csv_builder() -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(true).flexible(false);
    builder
}

/// Reads a Parquet file (any compression the writer used: snappy, zstd, lz4, gzip).
fn read_parquet<T: parquet::file::reader::ChunkReader + 'static>(
    file: T,
    path: &str,
) -> Result<RawTable, Error> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;
    let file_error = |message: String| Error::Read {
        path: path.to_string(),
        message,
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| file_error(e.to_string()))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| file_error(e.to_string()))?;
    let numeric_type = |t: &DataType| t.is_numeric();
    let mut values: Vec<Values> = schema
        .fields()
        .iter()
        .map(|f| {
            if numeric_type(f.data_type()) {
                Values::Numbers(Vec::new())
            } else {
                Values::Texts {
                    values: Vec::new(),
                    infer: false,
                }
            }
        })
        .collect();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| file_error(e.to_string()))?;
        rows += batch.num_rows();
        for ((field, column), into) in schema
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(values.iter_mut())
        {
            match into {
                Values::Numbers(numbers) => {
                    let cast = arrow_cast::cast(column, &DataType::Float64)
                        .map_err(|e| file_error(format!("column '{}': {e}", field.name())))?;
                    let cast = cast.as_primitive::<arrow_array::types::Float64Type>();
                    numbers.extend((0..cast.len()).map(|k| {
                        (cast.is_valid(k) && !cast.value(k).is_nan()).then(|| cast.value(k))
                    }));
                }
                Values::Texts { values: texts, .. }
                    if matches!(field.data_type(), DataType::Timestamp(..)) =>
                {
                    texts.extend(
                        timestamp_texts(column, field.data_type())
                            .map_err(|e| file_error(format!("column '{}': {e}", field.name())))?,
                    );
                }
                Values::Texts { values: texts, .. } => {
                    let cast = arrow_cast::cast(column, &DataType::Utf8).map_err(|e| {
                        file_error(format!(
                            "column '{}' has the type {} which cannot be compared: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    })?;
                    let cast = cast.as_string::<i32>();
                    texts.extend(
                        (0..cast.len())
                            .map(|k| cast.is_valid(k).then(|| cast.value(k).to_string())),
                    );
                }
            }
        }
    }
    if rows == 0 {
        return Err(file_error("the file has no rows".into()));
    }
    Ok(RawTable {
        rows,
        names: schema
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect(),
        values,
    })
}

/// A timestamp column as RFC 3339 texts in UTC. Arrow's own text cast needs a time zone
/// database for named zones (`UTC`, as pandas and ctflow's inference log write them);
/// the stored values are UTC instants whatever the zone, so they are formatted directly.
fn timestamp_texts(
    column: &arrow_array::ArrayRef,
    data_type: &arrow_schema::DataType,
) -> Result<Vec<Option<String>>, String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_schema::{DataType, TimeUnit};
    let DataType::Timestamp(unit, _) = data_type else {
        return Err(format!("{data_type} is not a timestamp"));
    };
    let raw = arrow_cast::cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
    let raw = raw.as_primitive::<arrow_array::types::Int64Type>();
    let to_ms = |v: i64| match unit {
        TimeUnit::Second => v.saturating_mul(1000),
        TimeUnit::Millisecond => v,
        TimeUnit::Microsecond => v.div_euclid(1000),
        TimeUnit::Nanosecond => v.div_euclid(1_000_000),
    };
    Ok((0..raw.len())
        .map(|k| {
            raw.is_valid(k)
                .then(|| chrono::DateTime::from_timestamp_millis(to_ms(raw.value(k))))
                .flatten()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
        .collect())
}

/// Reads a CSV file with a header row.
fn read_csv<R: std::io::Read>(mut reader: csv::Reader<R>, path: &str) -> Result<RawTable, Error> {
    let file_error = |message: String| Error::Read {
        path: path.to_string(),
        message,
    };
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
    let mut raw: Vec<Vec<Option<String>>> = vec![Vec::new(); headers.len()];
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| file_error(e.to_string()))?;
        for (i, value) in record.iter().enumerate() {
            raw[i].push((!is_null(value)).then(|| value.trim().to_string()));
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(file_error("the file has a header but no rows".into()));
    }
    Ok(RawTable {
        rows,
        names: headers,
        values: raw
            .into_iter()
            .map(|values| Values::Texts {
                values,
                infer: true,
            })
            .collect(),
    })
}

/// Types a text column: numeric when every value parses as a number, unless forced
/// categorical; a column declared numeric must parse. `present` holds the non-null values.
fn type_column(
    name: String,
    present: Vec<String>,
    nulls: usize,
    categorical: bool,
    declared_numeric: bool,
) -> Result<Column, String> {
    let categories = |name: String, present: Vec<String>| Column {
        name,
        data: ColumnData::Categorical(present),
        nulls,
        infinite: 0,
    };
    if categorical {
        return Ok(categories(name, present));
    }
    let mut numbers = Vec::with_capacity(present.len());
    for value in &present {
        match value.parse::<f64>() {
            Ok(v) => numbers.push(v),
            Err(_) if declared_numeric => {
                return Err(format!(
                    "column '{name}' was declared numeric but holds '{value}'"
                ));
            }
            Err(_) => return Ok(categories(name, present)),
        }
    }
    let infinite = numbers.iter().filter(|v| v.is_infinite()).count();
    numbers.retain(|v| v.is_finite());
    Ok(Column {
        name,
        data: ColumnData::Numeric(numbers),
        nulls,
        infinite,
    })
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
        let table = read_table(&path, &Typing::default()).expect("readable");
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
        let forced = read_table(&path, &typing).expect("readable");
        assert!(matches!(
            forced.column("code").expect("code").data,
            ColumnData::Categorical(_)
        ));
    }

    #[test]
    fn parquet_timestamps_with_a_named_zone_read_as_utc_instants() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
        let stamps = TimestampMillisecondArray::from(vec![Some(1_700_000_000_123), None])
            .with_timezone("UTC");
        let batch =
            RecordBatch::try_from_iter([("at", Arc::new(stamps) as ArrayRef)]).expect("a batch");
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        let table = read_raw_bytes(bytes.into(), "log.parquet").expect("readable");
        assert_eq!(
            table.timestamps("at").expect("timestamps"),
            vec![Some(1_700_000_000_123), None]
        );
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
        // Fetched bytes (object storage) read the same as the file.
        let bytes = bytes::Bytes::from(std::fs::read(&path).expect("readable"));
        assert_eq!(
            read_raw_bytes(bytes, "s3://b/a.parquet").expect("readable"),
            read_raw(&path).expect("readable")
        );
        let not_parquet = write(&dir, "b.parquet", "x\n1\n");
        assert!(read_table(&not_parquet, &Typing::default()).is_err());
    }

    #[test]
    fn files_append_row_aligned_and_type_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = write(&dir, "a.csv", "x,kind\n1,a\n2,b\n");
        // In the second file `x` holds a word: together the column is categorical.
        let b = write(&dir, "b.csv", "x,kind\nNA,c\nsome,a\n");
        let mut raw = read_raw(&a).expect("readable");
        raw.append(read_raw(&b).expect("readable"))
            .expect("same columns");
        assert_eq!(raw.rows, 4);
        let table = raw.clone().into_table(&Typing::default()).expect("typed");
        let x = table.column("x").expect("x");
        assert_eq!(x.nulls, 1);
        assert!(matches!(&x.data, ColumnData::Categorical(v) if v.len() == 3));
        raw.keep_last(2);
        let last = raw.into_table(&Typing::default()).expect("typed");
        assert_eq!(last.rows, 2);
        assert_eq!(
            last.column("kind").expect("kind").data,
            ColumnData::Categorical(vec!["c".into(), "a".into()])
        );
        let other = write(&dir, "c.csv", "y,kind\n1,a\n");
        let mut raw = read_raw(&a).expect("readable");
        assert!(
            raw.append(read_raw(&other).expect("readable"))
                .unwrap_err()
                .to_string()
                .contains("different columns")
        );
    }

    #[test]
    fn time_windows_keep_the_newest_span_and_drop_the_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            &dir,
            "t.csv",
            "ts,x\n2026-11-01T00:00:00Z,1\n2026-11-02 00:00:00,2\n,3\n2026-11-03,4\n1793750400,5\n",
        );
        // 1793750400 s is 2026-11-04T00:00:00Z, the newest row.
        let mut raw = read_raw(&path).expect("readable");
        let window = Window::Time {
            column: "ts".into(),
            span_ms: 2 * 86_400_000,
        };
        assert_eq!(window.apply(&mut raw).expect("applies"), 3);
        let table = raw.into_table(&Typing::default()).expect("typed");
        assert!(table.column("ts").is_none());
        assert_eq!(
            table.column("x").expect("x").data,
            ColumnData::Numeric(vec![4.0, 5.0])
        );
        let bad = write(&dir, "bad.csv", "ts,x\nyesterday,1\n");
        let mut raw = read_raw(&bad).expect("readable");
        assert!(
            window
                .apply(&mut raw)
                .unwrap_err()
                .to_string()
                .contains("'yesterday', which is not a timestamp")
        );
        let mut raw = read_raw(&bad).expect("readable");
        let missing = Window::Time {
            column: "when".into(),
            span_ms: 1,
        };
        assert!(missing.apply(&mut raw).is_err());
    }

    #[test]
    fn bad_files_are_explained() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = write(&dir, "empty.csv", "");
        assert!(
            read_table(&empty, &Typing::default())
                .unwrap_err()
                .to_string()
                .contains("no header")
        );
        let header_only = write(&dir, "h.csv", "a,b\n");
        assert!(
            read_table(&header_only, &Typing::default())
                .unwrap_err()
                .to_string()
                .contains("no rows")
        );
        let ragged = write(&dir, "r.csv", "a,b\n1,2\n3\n");
        assert!(read_table(&ragged, &Typing::default()).is_err());
        let twice = write(&dir, "t.csv", "a,a\n1,2\n");
        assert!(
            read_table(&twice, &Typing::default())
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
            read_table(&words, &typing)
                .unwrap_err()
                .to_string()
                .contains("declared numeric but holds 'x'")
        );
        let missing = dir.path().join("nope.csv");
        assert!(read_table(&missing, &Typing::default()).is_err());
    }
}
