//! MLproject files: any text is a project or an error; a parsed project's entry points
//! render their commands with the defaults or say why not.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use ctflow_project::Project;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(project) = Project::parse(Path::new("/nonexistent-project"), text) else {
        return;
    };
    for entry in project.entry_points.values() {
        let _ = entry.render(&BTreeMap::new(), Path::new("/nonexistent-project"));
    }
});
