//! OTLP trace exports (`POST /v1/traces`): any bytes, as protobuf or as JSON, decode to
//! spans or to an error, never a panic; every decoded span stores and reads back.
#![no_main]

use ctflow_core::traces::{SpanRecord, otlp, span_proto_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    for decoded in [otlp::decode_protobuf(bytes), otlp::decode_json(bytes)] {
        if let Ok(spans) = decoded {
            for span in &spans {
                let record = SpanRecord::from_otlp(span);
                let _ = span_proto_json(&record.content);
            }
        }
    }
});
