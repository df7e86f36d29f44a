//! The TrainingPipeline spec: any text is a document or a list of field errors, and a
//! document's durations and schedules parse or refuse.
#![no_main]

use ctflow_core::pipeline::{DurationSpec, PipelineDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match PipelineDocument::from_yaml(text) {
        Ok(_) => {}
        Err(errors) => assert!(!errors.is_empty(), "a refusal names at least one field"),
    }
    let _ = DurationSpec::parse(text);
});
