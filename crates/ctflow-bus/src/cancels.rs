//! Which pipeline runs were asked to stop, and the tokens of the jobs that listen.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub(crate) struct Cancels {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, CancellationToken>,
    canceled: HashSet<String>,
}

impl Cancels {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // NB: the lock guards plain maps; a panic while holding it cannot leave them
        // half-updated, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn cancel(&self, pipeline_run: &str) {
        let mut inner = self.inner();
        inner.canceled.insert(pipeline_run.to_string());
        if let Some(token) = inner.tokens.get(pipeline_run) {
            token.cancel();
        }
    }

    /// A token that fires when the run is canceled, at once if it already was.
    pub(crate) fn token(&self, pipeline_run: &str) -> CancellationToken {
        let mut inner = self.inner();
        let token = inner
            .tokens
            .entry(pipeline_run.to_string())
            .or_default()
            .clone();
        if inner.canceled.contains(pipeline_run) {
            token.cancel();
        }
        token
    }

    pub(crate) fn forget(&self, pipeline_run: &str) {
        let mut inner = self.inner();
        inner.tokens.remove(pipeline_run);
        inner.canceled.remove(pipeline_run);
    }
}
