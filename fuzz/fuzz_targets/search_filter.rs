//! MLflow's search grammar: every filter and order_by parser takes any text and answers
//! with a parse or an error, never a panic.
#![no_main]

use ctflow_core::filter::{
    parse_experiment_filter, parse_experiment_order_by, parse_logged_model_filter,
    parse_model_version_filter, parse_model_version_order_by, parse_registered_model_filter,
    parse_registered_model_order_by, parse_run_filter, parse_run_order_by, parse_trace_filter,
    parse_trace_order_by,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_run_filter(text);
    let _ = parse_experiment_filter(text);
    let _ = parse_logged_model_filter(text);
    let _ = parse_registered_model_filter(text);
    let _ = parse_model_version_filter(text);
    let _ = parse_trace_filter(text);
    // order_by arrives as a list; a newline separates its items here.
    let items: Vec<String> = text.split('\n').map(str::to_string).collect();
    let _ = parse_run_order_by(&items);
    let _ = parse_experiment_order_by(&items);
    let _ = parse_registered_model_order_by(&items);
    let _ = parse_model_version_order_by(&items);
    let _ = parse_trace_order_by(&items);
});
