//! The Kubernetes Job executor: a worker (`ctflow worker --executor kubernetes`) runs each
//! CT job as one `batch/v1` Job, owned by its TrainingPipeline, and follows it to the end.
//! The Job's container runs `ctflow run` attached to the MLflow run the worker created, so
//! the training logs to the tracking server exactly as a local job does.

use std::time::Duration;

use ctflow_bus::{Job as CtJob, JobStatus};
use ctflow_worker::client::TrackingClient;
use ctflow_worker::execute::RunRequest;
use ctflow_worker::{JobRunner, RunnerReport, TrackedRun};
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::crd::{SOURCE_PREFIX, TrainingPipeline};
use crate::job::{self, JobContext, JobSettings, Verdict};

/// The longest a replaced Job of a lost run may take to go away.
const DELETE_WAIT: Duration = Duration::from_secs(120);

pub struct KubeJobRunner {
    client: Client,
    settings: JobSettings,
}

impl KubeJobRunner {
    pub fn new(client: Client, settings: JobSettings) -> KubeJobRunner {
        KubeJobRunner { client, settings }
    }
}

impl JobRunner for KubeJobRunner {
    fn backend(&self) -> &'static str {
        "kubernetes"
    }

    fn run<'a>(
        &'a self,
        job: &'a CtJob,
        request: &'a RunRequest,
        run: &'a TrackedRun,
        client: &'a TrackingClient,
        stop: CancellationToken,
    ) -> BoxFuture<'a, RunnerReport> {
        Box::pin(async move {
            let outcome = self.run_job(job, request, run, client, stop).await;
            let (status, message, failure) = match outcome {
                Ok(ended) => ended,
                Err(message) => (JobStatus::Failed, message, Some("Executor".to_string())),
            };
            end_run(client, run, status, failure.as_deref()).await;
            RunnerReport { status, message }
        })
    }
}

type Ended = (JobStatus, String, Option<String>);

impl KubeJobRunner {
    async fn run_job(
        &self,
        job: &CtJob,
        request: &RunRequest,
        run: &TrackedRun,
        client: &TrackingClient,
        stop: CancellationToken,
    ) -> Result<Ended, String> {
        let (namespace, owner) = self.placement(&job.pipeline, client).await?;
        let manifest = job::job_manifest(
            &JobContext {
                job,
                request,
                run,
                namespace: &namespace,
                owner,
            },
            &self.settings,
        )?;
        let name = job::job_name(&job.pipeline_run, job.attempt);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        create_job(&jobs, &manifest, &run.run_id, self.settings.poll).await?;
        let reference = format!("{namespace}/{name}");
        if let Err(error) = client
            .post(
                "runs/set-tag",
                &json!({"run_id": run.run_id, "key": "ctflow.kubernetes.job", "value": reference}),
            )
            .await
        {
            tracing::warn!(%error, job = reference, "cannot tag the run with its Job");
        }
        tracing::info!(job = reference, run_id = run.run_id, "Job created");

        let verdict = loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.cancelled() => {
                    delete(&jobs, &name).await;
                    self.attach_log(&pods, &name, run, client).await;
                    return Ok((JobStatus::Canceled, "stopped on request; the Job was deleted".into(), None));
                }
            }
            let current = match jobs.get_opt(&name).await {
                Ok(Some(current)) => current,
                Ok(None) => {
                    break Verdict::Failed {
                        reason: "Deleted".into(),
                        message: format!("the Job {reference} was deleted before it finished"),
                    };
                }
                Err(error) => {
                    tracing::warn!(%error, job = reference, "cannot read the Job; trying again");
                    continue;
                }
            };
            let listed = pods
                .list(&ListParams::default().labels(&job::pod_selector(&name)))
                .await
                .map(|list| list.items)
                .unwrap_or_default();
            match job::judge(&current, &listed) {
                None => {}
                Some(verdict @ Verdict::Failed { .. }) if listed.iter().any(is_stuck_pending) => {
                    // A pod that cannot start never ends its Job by itself.
                    delete(&jobs, &name).await;
                    break verdict;
                }
                Some(verdict) => break verdict,
            }
        };
        self.attach_log(&pods, &name, run, client).await;
        Ok(conclude(verdict, run, client).await)
    }

    /// The Job's namespace and owner: the namespace of the pipeline's TrainingPipeline
    /// (unless the worker fixes one), owned by that object so deleting it deletes the Job.
    async fn placement(
        &self,
        pipeline: &str,
        client: &TrackingClient,
    ) -> Result<
        (
            String,
            Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
        ),
        String,
    > {
        let record = client
            .pipeline(pipeline)
            .await
            .map_err(|e| format!("cannot read the pipeline '{pipeline}': {e}"))?;
        let object = record
            .source
            .strip_prefix(SOURCE_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .map(|(ns, name)| (ns.to_string(), name.to_string()));
        let namespace = self
            .settings
            .namespace
            .clone()
            .or_else(|| object.as_ref().map(|(ns, _)| ns.clone()))
            .unwrap_or_else(|| self.client.default_namespace().to_string());
        let Some((object_namespace, name)) = object else {
            return Ok((namespace, None));
        };
        // Owner references cannot cross namespaces.
        if object_namespace != namespace {
            return Ok((namespace, None));
        }
        let api: Api<TrainingPipeline> = Api::namespaced(self.client.clone(), &namespace);
        match api.get_opt(&name).await {
            Ok(Some(object)) => Ok((
                namespace,
                object.meta().uid.as_deref().map(|uid| {
                    job::owner_reference(
                        &TrainingPipeline::api_version(&()),
                        &TrainingPipeline::kind(&()),
                        &name,
                        uid,
                    )
                }),
            )),
            Ok(None) => Err(format!(
                "the TrainingPipeline {namespace}/{name} is gone; the job is not started"
            )),
            Err(error) => Err(format!(
                "cannot read the TrainingPipeline {namespace}/{name}: {error}"
            )),
        }
    }

    /// The pod's output, attached to the run as `kubernetes-pod.log`.
    async fn attach_log(
        &self,
        pods: &Api<Pod>,
        name: &str,
        run: &TrackedRun,
        client: &TrackingClient,
    ) {
        let listed = match pods
            .list(&ListParams::default().labels(&job::pod_selector(name)))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, job = name, "cannot list the Job's pods");
                return;
            }
        };
        let Some(pod) = listed
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        else {
            return;
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams {
            container: Some(job::CONTAINER.into()),
            ..LogParams::default()
        };
        match pods.logs(&pod_name, &params).await {
            Ok(text) => {
                if let Err(error) = client
                    .put_artifact(&run.artifact_uri, "kubernetes-pod.log", text)
                    .await
                {
                    tracing::warn!(%error, pod = pod_name, "cannot attach the pod's log to the run");
                }
            }
            Err(error) => tracing::warn!(%error, pod = pod_name, "cannot read the pod's log"),
        }
    }
}

/// Creates the Job. One that exists already is this run's (a retried create: kept) or
/// a lost run's of the same attempt (deleted first, so two never train at once).
pub async fn create_job(
    jobs: &Api<Job>,
    manifest: &Job,
    run_id: &str,
    poll: Duration,
) -> Result<(), String> {
    let name = manifest.metadata.name.clone().unwrap_or_default();
    let started = tokio::time::Instant::now();
    loop {
        match jobs.create(&PostParams::default(), manifest).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                match jobs.get_opt(&name).await {
                    Ok(Some(existing)) if job::run_of(&existing).as_deref() == Some(run_id) => {
                        return Ok(());
                    }
                    Ok(Some(existing)) => {
                        if existing.metadata.deletion_timestamp.is_none() {
                            tracing::warn!(job = name, earlier_run = ?job::run_of(&existing), "replacing the Job of a lost run");
                            delete(jobs, &name).await;
                        }
                    }
                    // Gone in between: create again.
                    Ok(None) => continue,
                    Err(error) => return Err(format!("cannot read the Job {name}: {error}")),
                }
                if started.elapsed() > DELETE_WAIT {
                    return Err(format!(
                        "the Job {name} of a lost run did not go away within {}s",
                        DELETE_WAIT.as_secs()
                    ));
                }
                tokio::time::sleep(poll).await;
            }
            Err(error) => return Err(format!("cannot create the Job {name}: {error}")),
        }
    }
}

/// A pod still pending with a container that cannot start.
fn is_stuck_pending(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Pending"))
}

async fn delete(jobs: &Api<Job>, name: &str) {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => tracing::warn!(%error, job = name, "cannot delete the Job"),
    }
}

/// The job's outcome from the Job's verdict and what the run recorded.
async fn conclude(verdict: Verdict, run: &TrackedRun, client: &TrackingClient) -> Ended {
    let recorded = client.get_run(&run.run_id).await.ok();
    let status = recorded
        .as_ref()
        .map(|r| r.info.status.clone())
        .unwrap_or_default();
    let ci_failed = recorded
        .as_ref()
        .is_some_and(|r| r.tag("ctflow.ci") == Some("failed"));
    match verdict {
        Verdict::Succeeded if status == "FINISHED" => {
            (JobStatus::Succeeded, "training finished".into(), None)
        }
        Verdict::Succeeded => (
            JobStatus::Failed,
            format!("the Job succeeded but its run is {status}"),
            Some("RunNotFinished".into()),
        ),
        Verdict::Failed { reason, message } => {
            let status = if reason == "DeadlineExceeded" {
                JobStatus::TimedOut
            } else if ci_failed && status == "FAILED" {
                JobStatus::CiFailed
            } else {
                JobStatus::Failed
            };
            let message = if status == JobStatus::CiFailed {
                "CI check(s) failed (see ctflow-run.log of the run)".to_string()
            } else {
                message
            };
            (status, message, Some(reason))
        }
    }
}

/// Ends the MLflow run if the Job's command could not, and records why it failed.
async fn end_run(
    client: &TrackingClient,
    run: &TrackedRun,
    status: JobStatus,
    failure: Option<&str>,
) {
    if let Some(reason) = failure
        && let Err(error) = client
            .post(
                "runs/set-tag",
                &json!({"run_id": run.run_id, "key": "ctflow.kubernetes.failure", "value": reason}),
            )
            .await
    {
        tracing::warn!(%error, "cannot tag the run with the Job's failure");
    }
    let current = client
        .get_run(&run.run_id)
        .await
        .map(|r| r.info.status)
        .unwrap_or_default();
    if current != "RUNNING" && current != "SCHEDULED" {
        return;
    }
    let ended = match status {
        JobStatus::Succeeded => "FINISHED",
        JobStatus::Canceled | JobStatus::TimedOut => "KILLED",
        _ => "FAILED",
    };
    if let Err(error) = client
        .post(
            "runs/update",
            &json!({"run_id": run.run_id, "status": ended, "end_time": ctflow_core::now_ms()}),
        )
        .await
    {
        tracing::warn!(%error, run_id = run.run_id, "cannot end the run");
    }
}
