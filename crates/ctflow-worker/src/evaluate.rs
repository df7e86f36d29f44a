//! The CT gate's evaluation step, run by the worker once a training job succeeded: the
//! pipeline's evaluate entry point scores the candidate and the current champion on the
//! run's data snapshot, each in an MLflow run of its own (a dataset input with context
//! `evaluation`), and the training run is tagged with both runs, so the controller's gate
//! compares numbers measured on the same data rather than each model's own old test split.

use std::collections::BTreeMap;

use ctflow_bus::Job;
use ctflow_client::{ClientError, TrackingClient};
use ctflow_core::pipeline::{Evaluation, evaluation_tags};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::execute::{Line, Observer, RunRequest, execute};

/// The logged model of the training run that the pipeline promotes, as a `models:/` URI.
async fn candidate_uri(
    client: &TrackingClient,
    run_id: &str,
    logged_model: &str,
) -> Result<String, String> {
    let run = client.get_run(run_id).await.map_err(|e| e.to_string())?;
    for output in run.outputs.map(|o| o.model_outputs).unwrap_or_default() {
        let found = client
            .get(&format!("logged-models/{}", output.model_id), &[])
            .await
            .map_err(|e| e.to_string())?;
        if found["model"]["info"]["name"].as_str() == Some(logged_model) {
            return Ok(format!("models:/{}", output.model_id));
        }
    }
    Err(format!(
        "the training run logged no model named '{logged_model}' to evaluate"
    ))
}

/// One training run's evaluation: what every scoring run shares.
struct Scoring<'a> {
    client: &'a TrackingClient,
    job: &'a Job,
    evaluation: &'a Evaluation,
    training: &'a RunRequest,
    training_run: &'a str,
    observer: &'a dyn Observer,
}

impl Scoring<'_> {
    /// Scores one model: the evaluate entry point in a run of its own. Returns the run id.
    async fn score(
        &self,
        role: &str,
        uri: &str,
        stop: CancellationToken,
    ) -> Result<String, String> {
        let mut request = self.training.clone();
        request.entry_point = self.evaluation.entry_point.clone();
        request.params =
            BTreeMap::from([(self.evaluation.model_parameter.clone(), uri.to_string())]);
        request.run_name = self
            .training
            .run_name
            .as_ref()
            .map(|name| format!("{name}-evaluate-{role}"));
        request.run_id = None;
        request.ci_checks = Vec::new();
        request.tags.extend([
            (
                "ctflow.evaluation.of".to_string(),
                self.training_run.to_string(),
            ),
            ("ctflow.evaluation.role".to_string(), role.to_string()),
            ("ctflow.evaluation.model_uri".to_string(), uri.to_string()),
        ]);
        if let Some(data) = &mut request.data {
            data.dataset_name = format!("{}-evaluation", self.job.pipeline);
            data.context = "evaluation".into();
            // NB: the training command of this job has just read every file against its
            // digest; a rewrite since then shows in the size or time.
            data.full_check = false;
        }
        self.observer
            .line(Line::Note(format!("=== evaluating the {role}: {uri} ===")));
        let report = execute(self.client, &request, self.observer, stop)
            .await
            .map_err(|e| format!("the {role} evaluation could not start: {e}"))?;
        if let Some(changed) = report.data_changed {
            return Err(changed);
        }
        match (report.stopped, report.exit_code) {
            (None, Some(0)) => Ok(report.run_id),
            (Some(reason), _) => Err(format!("the {role} evaluation was stopped ({reason:?})")),
            (None, code) => Err(format!(
                "the {role} evaluation ({uri}) exited with {}",
                code.map_or("a signal".to_string(), |c| c.to_string())
            )),
        }
    }
}

/// Runs the evaluation step of `job` for its training run, when the pipeline has one;
/// an error says why the job cannot be judged on the same data. The worker calls it after
/// a local training command; `ctflow run --pipeline-run` in a Kubernetes Job's pod after
/// its own (so the models are scored in the pipeline's image).
pub async fn evaluate_candidate(
    client: &TrackingClient,
    job: &Job,
    training: &RunRequest,
    training_run: &str,
    observer: &dyn Observer,
    stop: CancellationToken,
) -> Result<(), String> {
    let (Some(evaluation), Some(model)) = (&job.spec.gates.ct.evaluation, &job.spec.model) else {
        return Ok(());
    };
    let Some(data) = &training.data else {
        return Err("the evaluation needs the run's data snapshot, and it has none".into());
    };
    let candidate = candidate_uri(client, training_run, &model.logged_model).await?;
    let alias = &job.spec.promotion.champion_alias;
    let champion = match client.alias_version(&model.name, alias).await {
        Ok(version) => Some(version),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(error) => return Err(error.to_string()),
    };
    let scoring = Scoring {
        client,
        job,
        evaluation,
        training,
        training_run,
        observer,
    };
    let mut tags = vec![(evaluation_tags::SNAPSHOT, data.snapshot.id.clone())];
    let run = scoring.score("candidate", &candidate, stop.clone()).await?;
    tags.push((evaluation_tags::CANDIDATE_RUN, run));
    if let Some(version) = champion {
        let uri = format!("models:/{}/{version}", model.name);
        let run = scoring.score("champion", &uri, stop).await?;
        tags.push((evaluation_tags::CHAMPION_RUN, run));
        tags.push((evaluation_tags::CHAMPION_VERSION, version));
    }
    for (key, value) in tags {
        client
            .post(
                "runs/set-tag",
                &json!({ "run_id": training_run, "key": key, "value": value }),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
