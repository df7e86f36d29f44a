//! MLflow Projects: reading an `MLproject` directory the way MLflow does, checking typed
//! parameters, and rendering an entry point's command with every value shell-quoted.
//!
//! This crate is pure: it reads the project folder and checks `path` parameters exist, but
//! runs nothing. Environments and execution build on it.
#![forbid(unsafe_code)]

mod env;
mod format;
mod quote;
mod source;
mod spec;

pub use env::{PreparedEnv, PythonEnvSpec, default_env_cache, prepare_conda, prepare_virtualenv};
pub use format::render_template;
pub use quote::shell_quote;
pub use source::{Source, parse_source};
pub use spec::{EntryPoint, Environment, ParamType, Parameter, Project, RenderedCommand};

/// Everything that can be wrong with a project or a run request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("cannot read the project: {0}")]
    Io(String),
    #[error("invalid MLproject file: {0}")]
    Spec(String),
    #[error("the project has no entry point '{0}' (and no such .py or .sh file)")]
    UnknownEntryPoint(String),
    #[error("no value given for the required parameter(s): {0}")]
    MissingParameters(String),
    #[error("parameter '{name}' must be {expected}, got '{value}'")]
    BadValue {
        name: String,
        expected: &'static str,
        value: String,
    },
    #[error("parameter '{name}' is a path that does not exist: '{value}'")]
    MissingPath { name: String, value: String },
    #[error("invalid command template: {0}")]
    Template(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
