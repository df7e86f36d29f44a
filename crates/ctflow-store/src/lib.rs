//! ctflow's persistence layer: the MLflow-compatible tracking store over SQLite or
//! PostgreSQL, the CT engine's pipelines and pipeline runs, and the artifact stores.
//!
//! Both SQL engines run the same statements (written with `$N` placeholders, which SQLite
//! accepts too) through sqlx's `Any` driver; the engine is chosen by the URI at start-up.
//! On a SQLite file, long history reads (`direct_read`) and run writes (`group_commit`)
//! run the same statements on SQLite's own interface instead.
//! Each engine has its own migration folder, since DDL differs in small ways.
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod auth;
mod db;
mod direct_read;
mod error;
mod eval_datasets;
mod experiments;
mod feedback;
mod gateway;
mod group_commit;
mod issues;
mod leases;
mod logged_models;
pub mod object_artifacts;
mod page_reads;
mod pipelines;
mod point_blocks;
mod registry;
mod runs;
mod scorers;
mod search;
mod sql;
mod traces;
mod write_connection;

pub use ctflow_core::pipeline::PipelineRecord;
pub use ctflow_core::pipeline_run::{Approval, PipelineRun, PipelineRunEvent, PromotionStep};
pub use db::{Backend, Durability, Store, StoreOptions};
pub use error::{Error, Result};
pub use eval_datasets::{EvaluationDataset, UpsertCounts};
pub use experiments::ExperimentSearch;
pub use feedback::{FeedbackOutcome, NewLabel, StoredLabel};
pub use gateway::{
    Endpoint, EndpointBinding, EndpointSpec, ModelConfig, ModelDefinition, ModelMapping, NewSecret,
    SealedSecret, SecretInfo,
};
pub use issues::{ISSUE_SEVERITIES, ISSUE_STATUSES, Issue, IssueUpdate, NewIssue};
pub use leases::{CONTROLLER_ROLE, LeaseRecord};
pub use logged_models::{LoggedModelOrder, LoggedModelSearch, NewLoggedModel};
pub use pipelines::{CtCounts, Recorded};
pub use registry::{NewModelVersion, RegistrySearch};
pub use runs::{
    BatchMetric, DatasetInputRequest, DatasetSummary, HistoryPoint, NewRun, RunSearch, RunUpdate,
};
pub use scorers::{OnlineScorer, OnlineScoringConfig, ScorerVersion};
pub use traces::{SERVER_OWNED_TRACE_TAGS, TraceDeletion, TraceGroup, TraceSearch};
