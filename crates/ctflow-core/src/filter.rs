//! MLflow's search-filter and order-by grammar (SPEC section 9).
//!
//! A filter is a conjunction of clauses `<identifier> <comparator> <value>` joined by `AND`.
//! The generic parser here produces [`RawClause`]s; each search domain (runs, experiments,
//! logged models) then checks which entities, keys, comparators and value types it allows
//! and produces typed [`Clause`]s that the store turns into SQL.

use crate::{MlflowError, Result};

/// A comparison operator of the filter grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `LIKE` (SQL pattern, case-sensitive)
    Like,
    /// `ILIKE` (SQL pattern, case-insensitive)
    ILike,
    /// `IN (...)`
    In,
    /// `NOT IN (...)`
    NotIn,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    IsNotNull,
}

impl Comparator {
    /// The operator as written in a filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "!=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Like => "LIKE",
            Comparator::ILike => "ILIKE",
            Comparator::In => "IN",
            Comparator::NotIn => "NOT IN",
            Comparator::IsNull => "IS NULL",
            Comparator::IsNotNull => "IS NOT NULL",
        }
    }
}

pub(crate) const NUMERIC_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Gt,
    Comparator::Ge,
    Comparator::Lt,
    Comparator::Le,
];
pub(crate) const STRING_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
];
const STRING_OR_SET_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
    Comparator::In,
    Comparator::NotIn,
];
const KEY_VALUE_COMPARATORS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
    Comparator::IsNull,
    Comparator::IsNotNull,
];

/// A literal on the right-hand side of a clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number.
    Number(f64),
    /// The number as it was written, kept for error messages and string comparisons.
    NumberText(String),
    /// A quoted string.
    Str(String),
    /// A parenthesised list of strings (for `IN`).
    List(Vec<String>),
    /// `NULL`
    Null,
}

impl Literal {
    fn describe(&self) -> String {
        match self {
            Literal::Number(n) => n.to_string(),
            Literal::NumberText(t) => t.clone(),
            Literal::Str(s) => format!("'{s}'"),
            Literal::List(items) => format!("({})", items.join(", ")),
            Literal::Null => "NULL".into(),
        }
    }
}

/// An identifier as written: `prefix.key`, or a bare `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identifier {
    /// `metrics`, `params`, `tags`, `attributes`, ... as written, when there is one.
    pub prefix: Option<String>,
    /// The key (backquotes and quotes removed).
    pub key: String,
}

/// A parsed clause before a search domain validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawClause {
    /// What it compares.
    pub identifier: Identifier,
    /// How.
    pub comparator: Comparator,
    /// With what.
    pub value: Literal,
}

/// What a clause or order key refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A metric's latest value.
    Metric,
    /// A param.
    Param,
    /// A tag.
    Tag,
    /// A column of the entity itself (`status`, `start_time`, ...).
    Attribute,
    /// A dataset input (`datasets.name`, `datasets.digest`, ...).
    Dataset,
}

/// A validated clause of a particular search domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// What kind of key it compares.
    pub entity: Entity,
    /// The key, with attribute aliases resolved to their canonical column name.
    pub key: String,
    /// How it compares.
    pub comparator: Comparator,
    /// With what.
    pub value: Value,
}

/// A validated right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (metric values, numeric attributes).
    Number(f64),
    /// A string.
    Str(String),
    /// A list of strings (for `IN`).
    List(Vec<String>),
    /// Nothing (for `IS NULL`).
    None,
}

/// One `ORDER BY` key.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    /// What kind of key.
    pub entity: Entity,
    /// The key.
    pub key: String,
    /// `ASC` (the default) or `DESC`.
    pub ascending: bool,
}

fn invalid(msg: impl Into<String>) -> MlflowError {
    MlflowError::invalid(msg)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.src.len()
    }

    fn quoted(&mut self, quote: char) -> Result<String> {
        debug_assert_eq!(self.peek(), Some(quote));
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(invalid(format!(
                    "Invalid filter string '{}': unterminated quoted text",
                    self.src
                )));
            };
            self.pos += c.len_utf8();
            if c == quote {
                // SQL escapes a quote by doubling it.
                if self.peek() == Some(quote) {
                    self.pos += 1;
                    out.push(quote);
                    continue;
                }
                return Ok(out);
            }
            out.push(c);
        }
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '.' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.src[start..self.pos]
    }

    fn identifier(&mut self) -> Result<Identifier> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('`' | '"')) => {
                let key = self.quoted(q)?;
                return Ok(Identifier { prefix: None, key });
            }
            None => return Err(invalid(format!("Invalid filter string '{}'", self.src))),
            _ => {}
        }
        let word = self.word();
        if word.is_empty() {
            return Err(invalid(format!(
                "Invalid clause(s) in filter string: '{}'",
                self.rest().trim()
            )));
        }
        if let Some(prefix) = word.strip_suffix('.')
            && let Some(q @ ('`' | '"')) = self.peek()
        {
            let key = self.quoted(q)?;
            return Ok(Identifier {
                prefix: Some(prefix.to_string()),
                key,
            });
        }
        match word.split_once('.') {
            Some((prefix, key)) if !key.is_empty() => Ok(Identifier {
                prefix: Some(prefix.to_string()),
                key: key.to_string(),
            }),
            Some(_) => Err(invalid(format!("Invalid identifier '{word}'"))),
            None => Ok(Identifier {
                prefix: None,
                key: word.to_string(),
            }),
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest
            .get(..kw.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(kw))
        {
            let after = rest[kw.len()..].chars().next();
            if after.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                self.pos += kw.len();
                return true;
            }
        }
        false
    }

    fn comparator(&mut self) -> Result<Comparator> {
        self.skip_ws();
        for (sym, cmp) in [
            ("!=", Comparator::Ne),
            ("<>", Comparator::Ne),
            (">=", Comparator::Ge),
            ("<=", Comparator::Le),
            ("=", Comparator::Eq),
            (">", Comparator::Gt),
            ("<", Comparator::Lt),
        ] {
            if self.rest().starts_with(sym) {
                self.pos += sym.len();
                return Ok(cmp);
            }
        }
        if self.keyword("LIKE") {
            return Ok(Comparator::Like);
        }
        if self.keyword("ILIKE") {
            return Ok(Comparator::ILike);
        }
        if self.keyword("IN") {
            return Ok(Comparator::In);
        }
        if self.keyword("NOT") {
            if self.keyword("IN") {
                return Ok(Comparator::NotIn);
            }
            return Err(invalid(format!(
                "Invalid comparator in filter string '{}'",
                self.src
            )));
        }
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if self.keyword("NULL") {
                return Ok(if negated {
                    Comparator::IsNotNull
                } else {
                    Comparator::IsNull
                });
            }
        }
        Err(invalid(format!(
            "Invalid clause(s) in filter string: '{}'",
            self.rest().trim()
        )))
    }

    fn value(&mut self) -> Result<Literal> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => Ok(Literal::Str(self.quoted(q)?)),
            Some('(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(q @ ('\'' | '"')) => items.push(self.quoted(q)?),
                        Some(')') if items.is_empty() => {
                            return Err(invalid(
                                "While parsing a list in the query, expected a non-empty list of string values, but got empty list",
                            ));
                        }
                        _ => {
                            return Err(invalid(format!(
                                "While parsing a list in the query, expected string value, punctuation, or whitespace, but got different type in list: '{}'",
                                self.rest().trim()
                            )));
                        }
                    }
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {
                            self.pos += 1;
                            return Ok(Literal::List(items));
                        }
                        _ => {
                            return Err(invalid(format!(
                                "Invalid list in filter string '{}'",
                                self.src
                            )));
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '_') {
                        self.pos += c.len_utf8();
                    } else {
                        break;
                    }
                }
                let text = &self.src[start..self.pos];
                if text.is_empty() {
                    return Err(invalid(format!(
                        "Invalid clause(s) in filter string: '{}'",
                        self.rest().trim()
                    )));
                }
                match text.parse::<f64>() {
                    Ok(n)
                        if !text.eq_ignore_ascii_case("nan")
                            && !text.to_ascii_lowercase().contains("inf") =>
                    {
                        Ok(Literal::Number(n))
                    }
                    _ => Ok(Literal::NumberText(text.to_string())),
                }
            }
            None => Err(invalid(format!(
                "Invalid filter string '{}': missing value",
                self.src
            ))),
        }
    }
}

/// Parses a filter string into raw clauses. An empty or blank filter has no clauses.
pub fn parse_raw(filter: &str) -> Result<Vec<RawClause>> {
    let mut parser = Parser::new(filter);
    let mut clauses = Vec::new();
    while !parser.at_end() {
        let identifier = parser.identifier()?;
        let comparator = parser.comparator()?;
        let value = match comparator {
            Comparator::IsNull | Comparator::IsNotNull => Literal::Null,
            _ => parser.value()?,
        };
        clauses.push(RawClause {
            identifier,
            comparator,
            value,
        });
        if parser.at_end() {
            break;
        }
        if parser.keyword("AND") {
            continue;
        }
        if parser.keyword("OR") {
            return Err(invalid("Invalid clause(s) in filter string: 'OR'"));
        }
        return Err(invalid(format!(
            "Invalid clause(s) in filter string: '{}'",
            parser.rest().trim()
        )));
    }
    Ok(clauses)
}

pub(crate) fn check_comparator(cmp: Comparator, allowed: &[Comparator], what: &str) -> Result<()> {
    if allowed.contains(&cmp) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
    Err(invalid(format!(
        "Invalid comparator '{}' not one of '{names:?}' for {what}",
        cmp.as_str()
    )))
}

pub(crate) fn numeric_value(lit: &Literal, what: &str) -> Result<Value> {
    match lit {
        Literal::Number(n) => Ok(Value::Number(*n)),
        Literal::Str(s) | Literal::NumberText(s) => Err(invalid(format!(
            "Expected numeric value type for {what}. Found '{s}'"
        ))),
        other => Err(invalid(format!(
            "Expected numeric value type for {what}. Found {}",
            other.describe()
        ))),
    }
}

pub(crate) fn string_value(lit: &Literal, cmp: Comparator, what: &str) -> Result<Value> {
    match (lit, cmp) {
        (Literal::Null, Comparator::IsNull | Comparator::IsNotNull) => Ok(Value::None),
        (Literal::List(items), Comparator::In | Comparator::NotIn) => {
            Ok(Value::List(items.clone()))
        }
        (_, Comparator::In | Comparator::NotIn) => Err(invalid(format!(
            "While parsing a list in the query, expected a non-empty list of string values for {what}, but got {}",
            lit.describe()
        ))),
        (Literal::Str(s), _) => Ok(Value::Str(s.clone())),
        (other, _) => Err(invalid(format!(
            "Expected a quoted string value for {what} (e.g. 'my-value'). Got value {}",
            other.describe()
        ))),
    }
}

/// The entity types a run filter may name, with MLflow's accepted spellings.
fn run_entity(prefix: Option<&str>) -> Result<Entity> {
    match prefix.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(Entity::Attribute),
        Some("metric" | "metrics") => Ok(Entity::Metric),
        Some("param" | "params" | "parameter" | "parameters") => Ok(Entity::Param),
        Some("tag" | "tags") => Ok(Entity::Tag),
        Some("attribute" | "attributes" | "attr" | "run") => Ok(Entity::Attribute),
        Some("dataset" | "datasets") => Ok(Entity::Dataset),
        Some(other) => Err(invalid(format!(
            "Invalid entity type '{other}'. Valid values are ['metric', 'parameter', 'tag', 'attribute', 'dataset']"
        ))),
    }
}

/// Run attributes compared as strings.
pub const RUN_STRING_ATTRIBUTES: &[&str] = &[
    "run_id",
    "run_name",
    "status",
    "user_id",
    "artifact_uri",
    "lifecycle_stage",
];
/// Run attributes compared as numbers.
pub const RUN_NUMERIC_ATTRIBUTES: &[&str] = &["start_time", "end_time"];

fn canonical_run_attribute(key: &str) -> Option<&'static str> {
    match key {
        "run_id" => Some("run_id"),
        "run_name" | "run name" | "Run name" | "Run Name" => Some("run_name"),
        "status" => Some("status"),
        "user_id" => Some("user_id"),
        "artifact_uri" => Some("artifact_uri"),
        "lifecycle_stage" => Some("lifecycle_stage"),
        "start_time" | "created" | "Created" => Some("start_time"),
        "end_time" => Some("end_time"),
        _ => None,
    }
}

fn unknown_run_attribute(key: &str) -> MlflowError {
    invalid(format!(
        "Invalid attribute key '{key}' specified. Valid keys are '{:?}'",
        RUN_STRING_ATTRIBUTES
            .iter()
            .chain(RUN_NUMERIC_ATTRIBUTES)
            .collect::<Vec<_>>()
    ))
}

/// Parses and validates a `runs/search` filter.
pub fn parse_run_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let entity = run_entity(raw.identifier.prefix.as_deref())?;
            let key = raw.identifier.key;
            let cmp = raw.comparator;
            match entity {
                Entity::Metric => {
                    check_comparator(cmp, NUMERIC_COMPARATORS, "metrics")?;
                    let value = numeric_value(&raw.value, "metric")?;
                    Ok(Clause { entity, key, comparator: cmp, value })
                }
                Entity::Param | Entity::Tag => {
                    let what = if entity == Entity::Param { "parameter" } else { "tag" };
                    check_comparator(cmp, KEY_VALUE_COMPARATORS, what)?;
                    let value = string_value(&raw.value, cmp, what)?;
                    Ok(Clause { entity, key, comparator: cmp, value })
                }
                Entity::Attribute => {
                    let canonical =
                        canonical_run_attribute(&key).ok_or_else(|| unknown_run_attribute(&key))?;
                    if RUN_NUMERIC_ATTRIBUTES.contains(&canonical) {
                        check_comparator(cmp, NUMERIC_COMPARATORS, "numeric attributes")?;
                        let value = numeric_value(&raw.value, "numeric attribute")?;
                        Ok(Clause { entity, key: canonical.into(), comparator: cmp, value })
                    } else {
                        let allowed = if canonical == "run_id" {
                            STRING_OR_SET_COMPARATORS
                        } else {
                            STRING_COMPARATORS
                        };
                        check_comparator(cmp, allowed, "string attributes")?;
                        let value = string_value(&raw.value, cmp, "attribute")?;
                        Ok(Clause { entity, key: canonical.into(), comparator: cmp, value })
                    }
                }
                Entity::Dataset => {
                    if !matches!(key.as_str(), "name" | "digest" | "context") {
                        return Err(invalid(format!(
                            "Invalid dataset key '{key}' specified. Valid keys are '['name', 'digest', 'context']'"
                        )));
                    }
                    check_comparator(cmp, STRING_OR_SET_COMPARATORS, "datasets")?;
                    let value = string_value(&raw.value, cmp, "dataset")?;
                    Ok(Clause { entity, key, comparator: cmp, value })
                }
            }
        })
        .collect()
}

/// Parses and validates an `experiments/search` filter.
pub fn parse_experiment_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let key = raw.identifier.key;
            let cmp = raw.comparator;
            match raw.identifier.prefix.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("attribute" | "attributes" | "attr") => match key.as_str() {
                    "name" => {
                        check_comparator(cmp, STRING_COMPARATORS, "experiment name")?;
                        let value = string_value(&raw.value, cmp, "attribute")?;
                        Ok(Clause { entity: Entity::Attribute, key, comparator: cmp, value })
                    }
                    "experiment_id" => {
                        check_comparator(cmp, STRING_OR_SET_COMPARATORS, "experiment_id")?;
                        let value = match &raw.value {
                            Literal::Number(_) | Literal::NumberText(_) => {
                                Value::Str(raw.value.describe())
                            }
                            other => string_value(other, cmp, "attribute")?,
                        };
                        Ok(Clause { entity: Entity::Attribute, key, comparator: cmp, value })
                    }
                    "creation_time" | "last_update_time" => {
                        check_comparator(cmp, NUMERIC_COMPARATORS, "numeric attributes")?;
                        let value = numeric_value(&raw.value, "numeric attribute")?;
                        Ok(Clause { entity: Entity::Attribute, key, comparator: cmp, value })
                    }
                    other => Err(invalid(format!(
                        "Invalid attribute key '{other}' specified. Valid keys are '['name', 'creation_time', 'last_update_time', 'experiment_id']'"
                    ))),
                },
                Some("tag" | "tags") => {
                    check_comparator(cmp, KEY_VALUE_COMPARATORS, "tag")?;
                    let value = string_value(&raw.value, cmp, "tag")?;
                    Ok(Clause { entity: Entity::Tag, key, comparator: cmp, value })
                }
                Some(other) => Err(invalid(format!(
                    "Invalid entity type '{other}'. Valid values are ['tag', 'attribute']"
                ))),
            }
        })
        .collect()
}

/// Parses and validates a `logged-models/search` filter.
pub fn parse_logged_model_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let key = raw.identifier.key;
            let cmp = raw.comparator;
            match raw.identifier.prefix.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("attribute" | "attributes" | "attr") => {
                    let canonical = match key.as_str() {
                        "name" | "model_id" | "model_type" | "status" | "source_run_id" => {
                            key.clone()
                        }
                        "creation_timestamp" | "creation_time" => "creation_timestamp".into(),
                        "last_updated_timestamp" | "last_updated_time" => {
                            "last_updated_timestamp".into()
                        }
                        other => {
                            return Err(invalid(format!(
                                "Invalid attribute key '{other}' specified. Valid keys are '['name', 'model_id', 'model_type', 'status', 'source_run_id', 'creation_timestamp', 'last_updated_timestamp']'"
                            )));
                        }
                    };
                    if canonical.ends_with("timestamp") {
                        check_comparator(cmp, NUMERIC_COMPARATORS, "numeric attributes")?;
                        let value = numeric_value(&raw.value, "numeric attribute")?;
                        Ok(Clause { entity: Entity::Attribute, key: canonical, comparator: cmp, value })
                    } else {
                        check_comparator(cmp, STRING_OR_SET_COMPARATORS, "string attributes")?;
                        let value = string_value(&raw.value, cmp, "attribute")?;
                        Ok(Clause { entity: Entity::Attribute, key: canonical, comparator: cmp, value })
                    }
                }
                Some("metric" | "metrics") => {
                    check_comparator(cmp, NUMERIC_COMPARATORS, "metrics")?;
                    let value = numeric_value(&raw.value, "metric")?;
                    Ok(Clause { entity: Entity::Metric, key, comparator: cmp, value })
                }
                Some(prefix @ ("param" | "params" | "tag" | "tags")) => {
                    let entity = if prefix.starts_with("param") { Entity::Param } else { Entity::Tag };
                    check_comparator(cmp, STRING_COMPARATORS, prefix)?;
                    let value = string_value(&raw.value, cmp, prefix)?;
                    Ok(Clause { entity, key, comparator: cmp, value })
                }
                Some(other) => Err(invalid(format!(
                    "Invalid entity type '{other}'. Valid values are ['attributes', 'metrics', 'params', 'tags']"
                ))),
            }
        })
        .collect()
}

/// The prompt-registry pseudo tag the client appends to every registered-model search; a
/// model without it counts as `'false'`.
pub const PROMPT_TAG: &str = "mlflow.prompt.is_prompt";

fn registry_tag_clause(key: String, raw: &RawClause) -> Result<Clause> {
    let cmp = raw.comparator;
    check_comparator(cmp, STRING_COMPARATORS, "tag")?;
    let value = string_value(&raw.value, cmp, "tag")?;
    Ok(Clause {
        entity: Entity::Tag,
        key,
        comparator: cmp,
        value,
    })
}

/// Parses and validates a `registered-models/search` filter.
pub fn parse_registered_model_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let prefix = raw
                .identifier
                .prefix
                .as_deref()
                .map(str::to_ascii_lowercase);
            let key = raw.identifier.key.clone();
            match (prefix.as_deref(), key.as_str()) {
                (None | Some("attribute" | "attributes"), "name") => {
                    check_comparator(raw.comparator, STRING_OR_SET_COMPARATORS, "name")?;
                    let value = string_value(&raw.value, raw.comparator, "name")?;
                    Ok(Clause {
                        entity: Entity::Attribute,
                        key,
                        comparator: raw.comparator,
                        value,
                    })
                }
                (Some("tag" | "tags"), _) => registry_tag_clause(key, &raw),
                _ => Err(invalid(format!(
                    "Invalid clause(s) in filter string: {}, {}, {}",
                    raw.identifier.key,
                    raw.comparator.as_str(),
                    raw.value.describe()
                ))),
            }
        })
        .collect()
}

/// Parses and validates a `model-versions/search` filter.
pub fn parse_model_version_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let prefix = raw.identifier.prefix.as_deref().map(str::to_ascii_lowercase);
            let key = raw.identifier.key.clone();
            match prefix.as_deref() {
                Some("tag" | "tags") => registry_tag_clause(key, &raw),
                None | Some("attribute" | "attributes") => match key.as_str() {
                    "name" | "run_id" | "source_path" => {
                        check_comparator(raw.comparator, STRING_OR_SET_COMPARATORS, &key)?;
                        let value = string_value(&raw.value, raw.comparator, &key)?;
                        Ok(Clause { entity: Entity::Attribute, key, comparator: raw.comparator, value })
                    }
                    "version_number" => {
                        check_comparator(raw.comparator, NUMERIC_COMPARATORS, "version_number")?;
                        let value = match &raw.value {
                            Literal::Str(s) => s.parse::<f64>().map(Value::Number).map_err(|_| {
                                invalid(format!("Expected numeric value type for version_number. Found '{s}'"))
                            })?,
                            other => numeric_value(other, "version_number")?,
                        };
                        Ok(Clause { entity: Entity::Attribute, key, comparator: raw.comparator, value })
                    }
                    other => Err(invalid(format!(
                        "Invalid attribute key '{other}' specified. Valid keys are '{{'name', 'run_id', 'source_path', 'version_number'}}'"
                    ))),
                },
                Some(other) => Err(invalid(format!(
                    "Invalid entity type '{other}'. Valid values are ['tag', 'attribute']"
                ))),
            }
        })
        .collect()
}

fn parse_attribute_order_by(
    order_by: &[String],
    allowed: &[(&str, &'static str)],
) -> Result<Vec<OrderBy>> {
    let list = order_by
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| {
            let (identifier, ascending) = parse_order_clause(raw)?;
            let canonical = allowed
                .iter()
                .find(|(k, _)| *k == identifier.key)
                .map(|(_, c)| *c)
                .filter(|_| {
                    matches!(
                        identifier.prefix.as_deref(),
                        None | Some("attribute" | "attributes")
                    )
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "Invalid order by key '{}' specified. Valid keys are {:?}",
                        identifier.key,
                        allowed.iter().map(|(k, _)| *k).collect::<Vec<_>>()
                    ))
                })?;
            Ok(OrderBy {
                entity: Entity::Attribute,
                key: canonical.to_string(),
                ascending,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    dedupe_order(&list)?;
    Ok(list)
}

/// Parses `registered-models/search` order_by entries.
pub fn parse_registered_model_order_by(order_by: &[String]) -> Result<Vec<OrderBy>> {
    parse_attribute_order_by(
        order_by,
        &[
            ("name", "name"),
            ("timestamp", "last_updated_timestamp"),
            ("last_updated_timestamp", "last_updated_timestamp"),
            ("creation_timestamp", "creation_timestamp"),
        ],
    )
}

/// Parses `model-versions/search` order_by entries.
pub fn parse_model_version_order_by(order_by: &[String]) -> Result<Vec<OrderBy>> {
    parse_attribute_order_by(
        order_by,
        &[
            ("name", "name"),
            ("version_number", "version"),
            ("creation_timestamp", "creation_timestamp"),
            ("last_updated_timestamp", "last_updated_timestamp"),
            ("timestamp", "last_updated_timestamp"),
        ],
    )
}

pub(crate) fn parse_order_clause(raw: &str) -> Result<(Identifier, bool)> {
    let mut parser = Parser::new(raw);
    let bad = || {
        invalid(format!(
            "Invalid order_by clause '{raw}'. Could not be parsed."
        ))
    };
    let identifier = parser.identifier().map_err(|_| bad())?;
    let ascending = if parser.at_end() || parser.keyword("ASC") {
        true
    } else if parser.keyword("DESC") {
        false
    } else {
        return Err(invalid(format!(
            "Invalid ordering key in order_by clause '{raw}'."
        )));
    };
    if !parser.at_end() {
        return Err(bad());
    }
    Ok((identifier, ascending))
}

fn dedupe_order(list: &[OrderBy]) -> Result<()> {
    for (i, a) in list.iter().enumerate() {
        if list[..i]
            .iter()
            .any(|b| b.entity == a.entity && b.key == a.key)
        {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {}",
                a.key
            )));
        }
    }
    Ok(())
}

/// Parses `runs/search` order_by entries.
pub fn parse_run_order_by(order_by: &[String]) -> Result<Vec<OrderBy>> {
    let list = order_by
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| {
            let (identifier, ascending) = parse_order_clause(raw)?;
            let entity = run_entity(identifier.prefix.as_deref())?;
            let key = match entity {
                Entity::Attribute => canonical_run_attribute(&identifier.key)
                    .ok_or_else(|| unknown_run_attribute(&identifier.key))?
                    .to_string(),
                Entity::Dataset => {
                    return Err(invalid(format!(
                        "Invalid order_by clause '{raw}': datasets cannot be ordered by"
                    )));
                }
                _ => identifier.key,
            };
            Ok(OrderBy {
                entity,
                key,
                ascending,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    dedupe_order(&list)?;
    Ok(list)
}

/// Parses `experiments/search` order_by entries.
pub fn parse_experiment_order_by(order_by: &[String]) -> Result<Vec<OrderBy>> {
    let list = order_by
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| {
            let (identifier, ascending) = parse_order_clause(raw)?;
            if !matches!(
                identifier.prefix.as_deref(),
                None | Some("attribute" | "attributes" | "attr")
            ) {
                return Err(invalid(format!("Invalid order_by entity in '{raw}'")));
            }
            match identifier.key.as_str() {
                "name" | "experiment_id" | "creation_time" | "last_update_time" => Ok(OrderBy {
                    entity: Entity::Attribute,
                    key: identifier.key,
                    ascending,
                }),
                other => Err(invalid(format!(
                    "Invalid attribute key '{other}' specified. Valid keys are '['name', 'experiment_id', 'creation_time', 'last_update_time']'"
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    dedupe_order(&list)?;
    Ok(list)
}

/// Translates a SQL LIKE pattern into a matcher, for callers that filter in memory.
pub fn like_matches(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(filter: &str) -> Clause {
        let mut clauses = parse_run_filter(filter).unwrap();
        assert_eq!(clauses.len(), 1, "{filter}");
        clauses.remove(0)
    }

    #[test]
    fn parses_the_observed_run_filters() {
        let clauses = parse_run_filter("metrics.accuracy > 0.5 and params.C = '0.05'").unwrap();
        assert_eq!(clauses.len(), 2);
        assert_eq!(clauses[0].entity, Entity::Metric);
        assert_eq!(clauses[0].value, Value::Number(0.5));
        assert_eq!(clauses[1].entity, Entity::Param);
        assert_eq!(clauses[1].value, Value::Str("0.05".into()));

        let c = one("tags.`mlflow.runName` ILIKE 'R1'");
        assert_eq!(
            (c.entity, c.key.as_str(), c.comparator),
            (Entity::Tag, "mlflow.runName", Comparator::ILike)
        );
        let c = one("tags.\"mlflow.runName\" = 'x'");
        assert_eq!(c.key, "mlflow.runName");
        let c = one("tags.group IS NULL");
        assert_eq!((c.comparator, c.value), (Comparator::IsNull, Value::None));
        let c = one("attribute.user_id = 'root'");
        assert_eq!((c.entity, c.key.as_str()), (Entity::Attribute, "user_id"));
        let c = one("run.status != 'FAILED'");
        assert_eq!(c.comparator, Comparator::Ne);
        let c = one("attributes.run_id NOT IN ('x', 'y')");
        assert_eq!(c.value, Value::List(vec!["x".into(), "y".into()]));
        let c = one("attributes.`Run name` = 'a'");
        assert_eq!(c.key, "run_name");
        let c = one("created > 0");
        assert_eq!(c.key, "start_time");
        let c = one("datasets.context IN ('train')");
        assert_eq!(c.entity, Entity::Dataset);
        let c = one("params.C LIKE '0.%'");
        assert_eq!(c.comparator, Comparator::Like);
        let c = one("metrics.loss <= -1.5e3");
        assert_eq!(c.value, Value::Number(-1500.0));
    }

    #[test]
    fn accepts_a_dangling_and_and_blank_filters() {
        assert_eq!(
            parse_run_filter("metrics.accuracy > 0.5 and")
                .unwrap()
                .len(),
            1
        );
        assert!(parse_run_filter("").unwrap().is_empty());
        assert!(parse_run_filter("   ").unwrap().is_empty());
    }

    #[test]
    fn rejects_what_mlflow_rejects() {
        let cases = [
            ("metrics.a > 1 OR metrics.b > 2", "'OR'"),
            (
                "metrics.a = 'abc'",
                "Expected numeric value type for metric. Found 'abc'",
            ),
            ("params.C > '1'", "Invalid comparator"),
            ("tags.x LIKE 5", "Expected a quoted string value"),
            ("params.C IN ('a')", "Invalid comparator"),
            ("attributes.bogus = 'x'", "Invalid attribute key"),
            ("foo.bar = 'x'", "Invalid entity type"),
            ("metrics.a >", "missing value"),
            ("params.a = 'unterminated", "unterminated"),
            ("attributes.status IN ('a')", "Invalid comparator"),
        ];
        for (filter, expected) in cases {
            let err = parse_run_filter(filter).unwrap_err();
            assert!(err.message.contains(expected), "{filter}: {}", err.message);
        }
    }

    #[test]
    fn parses_order_by() {
        let o = parse_run_order_by(&["metrics.accuracy DESC".into(), "params.C".into()]).unwrap();
        assert_eq!(
            o[0],
            OrderBy {
                entity: Entity::Metric,
                key: "accuracy".into(),
                ascending: false
            }
        );
        assert_eq!(
            o[1],
            OrderBy {
                entity: Entity::Param,
                key: "C".into(),
                ascending: true
            }
        );
        let o =
            parse_run_order_by(&["tags.`x y` asc".into(), "attributes.start_time".into()]).unwrap();
        assert_eq!(o[0].key, "x y");
        assert_eq!(o[1].key, "start_time");
        let err = parse_run_order_by(&["metrics.a SIDEWAYS".into()]).unwrap_err();
        assert!(err.message.contains("Invalid ordering key"));
        let err = parse_run_order_by(&["metrics.a".into(), "metrics.a DESC".into()]).unwrap_err();
        assert!(err.message.contains("duplicate"));
    }

    #[test]
    fn experiment_filters() {
        let c = parse_experiment_filter("name LIKE 'exp%' and tags.k = 'v'").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].entity, Entity::Tag);
        assert!(parse_experiment_filter("metrics.a > 1").is_err());
        let c = parse_experiment_filter("creation_time > 5").unwrap();
        assert_eq!(c[0].value, Value::Number(5.0));
    }

    #[test]
    fn logged_model_filters() {
        let c = parse_logged_model_filter("name = 'model'").unwrap();
        assert_eq!(c[0].key, "name");
        let c = parse_logged_model_filter("metrics.acc > 0.9 AND params.x = 'y'").unwrap();
        assert_eq!((c[0].entity, c[1].entity), (Entity::Metric, Entity::Param));
    }

    #[test]
    fn registry_filters() {
        let c = parse_registered_model_filter(
            "name LIKE 'wire-%' AND tag.`mlflow.prompt.is_prompt` != 'true'",
        )
        .unwrap();
        assert_eq!(
            (c[1].entity, c[1].key.as_str(), c[1].comparator),
            (Entity::Tag, PROMPT_TAG, Comparator::Ne)
        );
        let err = parse_registered_model_filter("version = 3").unwrap_err();
        assert_eq!(
            err.message,
            "Invalid clause(s) in filter string: version, =, 3"
        );
        let c = parse_model_version_filter(
            "name='m' and version_number > 1 and tags.validated = 'true'",
        )
        .unwrap();
        assert_eq!(c[1].value, Value::Number(1.0));
        let c =
            parse_model_version_filter("source_path = 'runs:/x/model' and run_id IN ('a', 'b')")
                .unwrap();
        assert_eq!(c[1].value, Value::List(vec!["a".into(), "b".into()]));
        assert!(
            parse_model_version_filter("foo = 'x'")
                .unwrap_err()
                .message
                .contains("Invalid attribute key 'foo'")
        );
        let o = parse_model_version_order_by(&["version_number DESC".into()]).unwrap();
        assert_eq!((o[0].key.as_str(), o[0].ascending), ("version", false));
        let o = parse_registered_model_order_by(&["timestamp".into()]).unwrap();
        assert_eq!(o[0].key, "last_updated_timestamp");
        assert!(parse_registered_model_order_by(&["bogus".into()]).is_err());
    }

    #[test]
    fn like_matching() {
        assert!(like_matches("0.%", "0.05", false));
        assert!(!like_matches("R1", "r1", false));
        assert!(like_matches("R1", "r1", true));
        assert!(like_matches("a_c", "abc", false));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,80}") {
            let _ = parse_run_filter(&s);
            let _ = parse_experiment_filter(&s);
            let _ = parse_logged_model_filter(&s);
            let _ = parse_run_order_by(std::slice::from_ref(&s));
            let _ = parse_registered_model_filter(&s);
            let _ = parse_model_version_filter(&s);
        }

        #[test]
        fn numeric_metric_clauses_round_trip(key in "[a-z][a-z0-9_]{0,10}", v in -1e6f64..1e6) {
            let c = one(&format!("metrics.{key} >= {v}"));
            prop_assert_eq!(c.key, key);
            prop_assert_eq!(c.value, Value::Number(v));
        }

        #[test]
        fn quoted_strings_round_trip(value in "[^'\\\\]{0,20}") {
            let c = one(&format!("params.p = '{value}'"));
            prop_assert_eq!(c.value, Value::Str(value));
        }
    }
}

// ---------------------------------------------------------------- issues

/// Parses and validates an `issues/search` filter: `status` and `source_run_id`, compared
/// as strings (MLflow 3.17 supports these two).
pub fn parse_issue_filter(filter: &str) -> Result<Vec<Clause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let key = raw.identifier.key.clone();
            if raw.identifier.prefix.is_some()
                || !matches!(key.as_str(), "status" | "source_run_id")
            {
                return Err(invalid(format!(
                    "Invalid filter field '{key}'. Supported fields: {{'status', 'source_run_id'}}"
                )));
            }
            check_comparator(raw.comparator, STRING_OR_SET_COMPARATORS, "issue fields")?;
            let value = string_value(&raw.value, raw.comparator, "issue field")?;
            Ok(Clause {
                entity: Entity::Attribute,
                key,
                comparator: raw.comparator,
                value,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- traces

/// What a `traces/search` clause compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceKey {
    /// `trace.status`: the trace's state name.
    Status,
    /// `trace.timestamp_ms`: when the request arrived, epoch ms.
    RequestTime,
    /// `trace.execution_time_ms`.
    ExecutionTime,
    /// `trace.end_time_ms`: request time plus execution time.
    EndTime,
    /// `trace.request_id` / `trace_id`.
    TraceId,
    /// `trace.client_request_id`.
    ClientRequestId,
    /// `trace.name`: the `mlflow.traceName` tag.
    Name,
    /// `trace.run_id`: the run the trace was made in or linked to.
    RunId,
    /// `trace.text`: anything in the trace's spans (LIKE only).
    Text,
    /// `tags.<key>`.
    Tag(String),
    /// `metadata.<key>` (also `request_metadata.`).
    Metadata(String),
    /// `span.name`: some span of the trace has this name.
    SpanName,
    /// `span.type`: some span of the trace has this type.
    SpanType,
}

impl TraceKey {
    /// Whether the key compares numbers.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            TraceKey::RequestTime | TraceKey::ExecutionTime | TraceKey::EndTime
        )
    }
}

/// A validated `traces/search` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceClause {
    /// What it compares.
    pub key: TraceKey,
    /// How.
    pub comparator: Comparator,
    /// With what.
    pub value: Value,
}

const TRACE_ATTRIBUTES: &str = "'{'status', 'timestamp_ms', 'client_request_id', 'run_id', 'end_time_ms', 'execution_time_ms', 'timestamp', 'request_id', 'execution_time', 'text', 'end_time', 'name'}'";

fn trace_attribute(key: &str) -> Result<TraceKey> {
    Ok(match key {
        "status" | "state" => TraceKey::Status,
        "timestamp" | "timestamp_ms" | "request_time" => TraceKey::RequestTime,
        "execution_time" | "execution_time_ms" | "execution_duration" => TraceKey::ExecutionTime,
        "end_time" | "end_time_ms" => TraceKey::EndTime,
        "request_id" | "trace_id" => TraceKey::TraceId,
        "client_request_id" => TraceKey::ClientRequestId,
        "name" => TraceKey::Name,
        "run_id" => TraceKey::RunId,
        "text" => TraceKey::Text,
        other => {
            return Err(invalid(format!(
                "Invalid attribute key '{other}' specified. Valid keys are {TRACE_ATTRIBUTES}"
            )));
        }
    })
}

/// Parses and validates a `traces/search` filter (MLflow 3's trace search grammar:
/// `trace.` / `attribute.` keys, `tags.`, `metadata.`, `span.name`, `span.type`).
pub fn parse_trace_filter(filter: &str) -> Result<Vec<TraceClause>> {
    parse_raw(filter)?
        .into_iter()
        .map(|raw| {
            let prefix = raw
                .identifier
                .prefix
                .as_deref()
                .map(str::to_ascii_lowercase);
            let name = raw.identifier.key.clone();
            let key = match prefix.as_deref() {
                None | Some("trace" | "attribute" | "attributes" | "attr") => {
                    trace_attribute(&name)?
                }
                Some("tag" | "tags") => TraceKey::Tag(name),
                Some("metadata" | "request_metadata") => TraceKey::Metadata(name),
                Some("span") => match name.as_str() {
                    "name" => TraceKey::SpanName,
                    "type" => TraceKey::SpanType,
                    other => {
                        return Err(invalid(format!(
                            "Invalid span key '{other}' specified. Valid keys are 'name', 'type'"
                        )));
                    }
                },
                Some(other) => {
                    return Err(invalid(format!(
                        "Invalid entity type '{other}'. Valid values are ['trace', 'attribute', 'tag', 'metadata', 'span']"
                    )));
                }
            };
            let cmp = raw.comparator;
            let value = if key.is_numeric() {
                check_comparator(cmp, NUMERIC_COMPARATORS, "numeric attributes")?;
                numeric_value(&raw.value, "numeric attribute")?
            } else if key == TraceKey::Text {
                check_comparator(cmp, &[Comparator::Like, Comparator::ILike], "text")?;
                string_value(&raw.value, cmp, "text")?
            } else if matches!(key, TraceKey::Tag(_) | TraceKey::Metadata(_)) {
                check_comparator(cmp, KEY_VALUE_COMPARATORS, "tags and metadata")?;
                string_value(&raw.value, cmp, "tag or metadata")?
            } else {
                check_comparator(cmp, STRING_OR_SET_COMPARATORS, "string attributes")?;
                string_value(&raw.value, cmp, "attribute")?
            };
            Ok(TraceClause {
                key,
                comparator: cmp,
                value,
            })
        })
        .collect()
}

/// Parses `traces/search` order_by entries: trace attributes (`timestamp_ms`,
/// `execution_time_ms`, `status`, `name`, `request_id`, `end_time_ms`), optionally with the
/// `trace.` / `attribute.` prefix. Returns the keys with their direction.
pub fn parse_trace_order_by(order_by: &[String]) -> Result<Vec<(TraceKey, bool)>> {
    let mut list: Vec<(TraceKey, bool)> = Vec::new();
    for raw in order_by.iter().filter(|s| !s.trim().is_empty()) {
        let (identifier, ascending) = parse_order_clause(raw)?;
        match identifier
            .prefix
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("trace" | "attribute" | "attributes" | "attr") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "Invalid order_by clause '{raw}': traces can be ordered by their attributes, not '{other}'"
                )));
            }
        }
        let key = trace_attribute(&identifier.key)?;
        if matches!(
            key,
            TraceKey::Text | TraceKey::RunId | TraceKey::ClientRequestId
        ) {
            return Err(invalid(format!(
                "Invalid order_by clause '{raw}': traces cannot be ordered by '{}'",
                identifier.key
            )));
        }
        if list.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {}",
                identifier.key
            )));
        }
        list.push((key, ascending));
    }
    Ok(list)
}

#[cfg(test)]
mod trace_filter_tests {
    use super::*;

    #[test]
    fn trace_filters_name_attributes_tags_metadata_and_text() {
        let clauses = parse_trace_filter(
            "trace.status = 'OK' and tags.env = 'prod' AND metadata.`mlflow.user` != 'x' \
             and timestamp_ms > 5 and attribute.run_id = 'r1' and trace.text LIKE '%a%'",
        )
        .expect("valid");
        let keys: Vec<TraceKey> = clauses.iter().map(|c| c.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                TraceKey::Status,
                TraceKey::Tag("env".into()),
                TraceKey::Metadata("mlflow.user".into()),
                TraceKey::RequestTime,
                TraceKey::RunId,
                TraceKey::Text
            ]
        );
        assert_eq!(clauses[3].value, Value::Number(5.0));
    }

    #[test]
    fn unknown_entities_keys_and_comparators_are_invalid() {
        for bad in [
            "invalid.filter = 'test'",
            "bogus = 1",
            "trace.text = 'x'",
            "timestamp_ms = 'soon'",
            "span.color = 'red'",
        ] {
            let error = parse_trace_filter(bad).expect_err(bad);
            let message = &error.message;
            assert!(
                message.starts_with("Invalid") || message.starts_with("Expected"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn issue_filters_take_status_and_source_run_only() {
        let clauses =
            parse_issue_filter("status = 'resolved' AND source_run_id != 'r1'").expect("valid");
        assert_eq!(clauses.len(), 2);
        assert_eq!(clauses[1].comparator, Comparator::Ne);
        for bad in ["name = 'x'", "tags.status = 'x'", "status > 'a'"] {
            assert!(parse_issue_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trace_order_keys_resolve_their_aliases() {
        let order =
            parse_trace_order_by(&["timestamp ASC".into(), "trace.execution_time DESC".into()])
                .expect("valid");
        assert_eq!(
            order,
            vec![
                (TraceKey::RequestTime, true),
                (TraceKey::ExecutionTime, false)
            ]
        );
        assert!(parse_trace_order_by(&["tags.x".into()]).is_err());
        assert!(parse_trace_order_by(&["timestamp".into(), "timestamp_ms DESC".into()]).is_err());
    }
}
