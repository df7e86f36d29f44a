//! A CT job as a `batch/v1` Job, and what a Job and its pods say about how the job is
//! going. Pure: `executor` does the API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use ctflow_bus::Job as CtJob;
use ctflow_worker::TrackedRun;
use ctflow_worker::execute::RunRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

/// The name of the job's container in the pod.
pub const CONTAINER: &str = "job";
/// Labels of the Jobs and pods ctflow creates.
pub const LABEL_PIPELINE: &str = "ctflow.dev/pipeline";
pub const LABEL_PIPELINE_RUN: &str = "ctflow.dev/pipeline-run";
pub const LABEL_ATTEMPT: &str = "ctflow.dev/attempt";
/// The annotation naming the MLflow run a Job works for.
pub const ANNOTATION_RUN: &str = "ctflow.dev/mlflow-run-id";
/// The variable of the job's own MLflow run in its container.
const RUN_VAR: &str = "MLFLOW_RUN_ID";

/// Worker-wide settings for the Jobs it creates.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The namespace of every Job; `None`: its TrainingPipeline's (else the client's).
    pub namespace: Option<String>,
    /// The image of a pipeline whose `project.image` is not set.
    pub default_image: Option<String>,
    /// The pods' service account unless the pipeline names one.
    pub service_account: Option<String>,
    /// How long a finished Job stays (unless the pipeline says otherwise).
    pub ttl_after_finished: Duration,
    /// How often a running Job and its pods are looked at.
    pub poll: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            namespace: None,
            default_image: None,
            service_account: None,
            ttl_after_finished: Duration::from_secs(3600),
            poll: Duration::from_secs(2),
        }
    }
}

/// The Job of one attempt: the same attempt always gets the same name, so a worker that
/// starts over finds the Job it made instead of making a twin.
pub fn job_name(pipeline_run: &str, attempt: i64) -> String {
    let id: String = pipeline_run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("ctflow-{id}-{attempt}");
    // NB: the Job controller copies the name into a label: at most 63 characters.
    if name.len() > 63 {
        name = format!("ctflow-{}-{attempt}", &id[id.len().saturating_sub(40)..]);
    }
    name
}

/// The `batch/v1` Job that runs `ctx.job` for `ctx.run`.
pub struct JobContext<'a> {
    pub job: &'a CtJob,
    pub request: &'a RunRequest,
    pub run: &'a TrackedRun,
    pub namespace: &'a str,
    pub owner: Option<OwnerReference>,
}

/// Builds the Job: `ctflow run` of the entry point in the pipeline's image, attached to the
/// MLflow run the worker created, with the pipeline's CI checks, resources and placement.
/// An error says what is missing or wrong, in the pipeline's terms.
pub fn job_manifest(ctx: &JobContext<'_>, settings: &JobSettings) -> Result<Job, String> {
    let spec = &ctx.job.spec;
    let request = ctx.request;
    let image = spec
        .project
        .image
        .clone()
        .or_else(|| settings.default_image.clone())
        .ok_or_else(|| {
            "no container image: set spec.project.image, or start the worker with --job-image"
                .to_string()
        })?;
    let mut args = vec![
        "run".to_string(),
        request.uri.clone(),
        "--entry-point".into(),
        request.entry_point.clone(),
        // NB: the image is the environment.
        "--env-manager".into(),
        "local".into(),
        // As with local workers: a project folder's commit is recorded, dirty or not.
        "--allow-dirty".into(),
    ];
    if let Some(version) = &request.version {
        args.extend(["--version".into(), version.clone()]);
    }
    // NB: the snapshot's manifest can be far bigger than a pod spec may hold, so the pod
    // reads it from the server, which also lets it run the evaluation step in the image.
    if ctx.job.snapshot_id.is_some() {
        args.extend(["--pipeline-run".into(), ctx.job.pipeline_run.clone()]);
    }
    for (key, value) in &request.params {
        args.extend(["-P".into(), format!("{key}={value}")]);
    }
    let mut env = vec![
        (
            "MLFLOW_TRACKING_URI".to_string(),
            request.tracking_uri.clone(),
        ),
        (RUN_VAR.into(), ctx.run.run_id.clone()),
        ("MLFLOW_EXPERIMENT_ID".into(), ctx.run.experiment_id.clone()),
    ];
    // The pipeline's variables; the local worker's own (its identity, its GPUs) do not apply.
    env.extend(
        request
            .env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("CTFLOW_") && k != "CTFLOW_WORKER" && k != "CTFLOW_INSTALLATION"
            })
            .cloned(),
    );
    if !request.ci_checks.is_empty() {
        let checks = serde_json::to_string(&request.ci_checks)
            .map_err(|e| format!("the CI checks cannot be written: {e}"))?;
        env.push(("CTFLOW_CI_CHECKS".into(), checks));
        if !request.ci_blocking {
            env.push(("CTFLOW_CI_SHADOW".into(), "true".into()));
        }
    }
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &spec.resources.cpu {
        requests.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &spec.resources.memory {
        requests.insert("memory".into(), json!(memory));
    }
    if spec.resources.gpu > 0 {
        // Extended resources are asked for as limits (requests follow them).
        limits.insert(
            "nvidia.com/gpu".into(),
            json!(spec.resources.gpu.to_string()),
        );
    }
    let kubernetes = spec.kubernetes.clone().unwrap_or_default();
    let labels = json!({
        "app.kubernetes.io/managed-by": "ctflow",
        LABEL_PIPELINE: label_value(&ctx.job.pipeline),
        LABEL_PIPELINE_RUN: label_value(&ctx.job.pipeline_run),
        LABEL_ATTEMPT: ctx.job.attempt.to_string(),
    });
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "command": ["ctflow"],
            "args": args,
            "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "resources": {"requests": requests, "limits": limits},
        }],
    });
    if let Some(account) = kubernetes
        .service_account_name
        .clone()
        .or_else(|| settings.service_account.clone())
    {
        pod_spec["serviceAccountName"] = json!(account);
    }
    if !kubernetes.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(kubernetes.node_selector);
    }
    if !kubernetes.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(kubernetes.tolerations);
    }
    let mut template = json!({"metadata": {"labels": labels}, "spec": pod_spec});
    if let Some(overlay) = &kubernetes.pod_template {
        overlay_template(&mut template, overlay);
    }
    let ttl = kubernetes
        .ttl_after_finished
        .map_or(settings.ttl_after_finished, |d| d.0);
    let mut job_spec = json!({
        // ctflow retries by the pipeline's retry policy, not Kubernetes.
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": ttl.as_secs(),
        "template": template,
    });
    if let Some(timeout) = spec.timeout {
        job_spec["activeDeadlineSeconds"] = json!(timeout.0.as_secs().max(1));
    }
    let mut metadata = json!({
        "name": job_name(&ctx.job.pipeline_run, ctx.job.attempt),
        "namespace": ctx.namespace,
        "labels": labels,
        "annotations": {ANNOTATION_RUN: ctx.run.run_id},
    });
    if let Some(owner) = &ctx.owner {
        metadata["ownerReferences"] = json!([owner]);
    }
    let object = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": job_spec,
    });
    serde_json::from_value(object)
        .map_err(|e| format!("spec.kubernetes.podTemplate does not make a valid pod template: {e}"))
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`.
fn label_value(text: &str) -> String {
    let mut value: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    value.truncate(63);
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Merges the pipeline's pod template onto ours: a JSON merge patch, except that
/// containers are matched by name (the job's is `job`) and their `env` and
/// `volumeMounts` entries, like the pod's `volumes`, are added rather than replaced.
fn overlay_template(template: &mut Value, overlay: &Value) {
    let mut overlay = overlay.clone();
    let containers = overlay
        .get_mut("spec")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("containers"));
    let volumes = overlay
        .get_mut("spec")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("volumes"));
    json_patch::merge(template, &overlay);
    if let Some(Value::Array(volumes)) = volumes {
        append_by_name(&mut template["spec"]["volumes"], volumes);
    }
    let Some(Value::Array(containers)) = containers else {
        return;
    };
    for mut extra in containers {
        let name = extra["name"].as_str().unwrap_or_default().to_string();
        let ours = template["spec"]["containers"]
            .as_array_mut()
            .and_then(|list| list.iter_mut().find(|c| c["name"] == name.as_str()));
        match ours {
            Some(container) => {
                let lists: Vec<(&str, Value)> = ["env", "volumeMounts"]
                    .into_iter()
                    .filter_map(|key| extra.as_object_mut()?.remove(key).map(|v| (key, v)))
                    .collect();
                json_patch::merge(container, &extra);
                for (key, value) in lists {
                    if let Value::Array(items) = value {
                        append_by_name(&mut container[key], items);
                    }
                }
            }
            None => {
                if let Some(list) = template["spec"]["containers"].as_array_mut() {
                    list.push(extra);
                }
            }
        }
    }
}

/// Adds `items` to a list, replacing entries with the same `name`.
fn append_by_name(list: &mut Value, items: Vec<Value>) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut() {
        for item in items {
            match list.iter_mut().find(|e| e["name"] == item["name"]) {
                Some(existing) => *existing = item,
                None => list.push(item),
            }
        }
    }
}

/// How a Job ended, as it and its pods say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// `reason` is short (`ImagePullBackOff`, `Evicted`, `DeadlineExceeded`, ...);
    /// `message` says it in a sentence.
    Failed {
        reason: String,
        message: String,
    },
}

/// Container waiting reasons that will not resolve by themselves.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How the Job ended, or `None` while it runs.
pub fn judge(job: &Job, pods: &[Pod]) -> Option<Verdict> {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .cloned()
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Some(Verdict::Succeeded);
    }
    if let Some(failed) = holds("Failed") {
        let reason = failed.reason.clone().unwrap_or_default();
        if reason == "DeadlineExceeded" {
            return Some(Verdict::Failed {
                reason,
                message: "the Job ran longer than its deadline (the pipeline's timeout)".into(),
            });
        }
        if let Some(verdict) = pods.iter().find_map(pod_failure) {
            return Some(verdict);
        }
        let message = failed.message.clone().unwrap_or_default();
        return Some(Verdict::Failed {
            reason: if reason.is_empty() {
                "Failed".into()
            } else {
                reason
            },
            message: format!("the Job failed: {message}"),
        });
    }
    // A pod that cannot even start never fails its Job: say so instead of waiting forever.
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .cloned()
            .unwrap_or_default();
        for status in statuses {
            let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(waiting) = waiting
                && let Some(reason) = &waiting.reason
                && STUCK.contains(&reason.as_str())
            {
                return Some(Verdict::Failed {
                    reason: reason.clone(),
                    message: format!(
                        "the pod {} cannot start its container: {reason}: {}",
                        pod.metadata.name.clone().unwrap_or_default(),
                        waiting.message.clone().unwrap_or_default()
                    ),
                });
            }
        }
        if let Some(verdict) = pod_failure(pod)
            .filter(|v| matches!(v, Verdict::Failed { reason, .. } if reason == "Evicted"))
        {
            return Some(verdict);
        }
    }
    None
}

/// Why a failed pod failed, in words.
fn pod_failure(pod: &Pod) -> Option<Verdict> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    if status.reason.as_deref() == Some("Evicted") {
        return Some(Verdict::Failed {
            reason: "Evicted".into(),
            message: format!(
                "the pod {name} was evicted: {}",
                status.message.clone().unwrap_or_default()
            ),
        });
    }
    let disrupted = status.conditions.as_ref().and_then(|c| {
        c.iter()
            .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    });
    if let Some(condition) = disrupted {
        return Some(Verdict::Failed {
            reason: condition
                .reason
                .clone()
                .unwrap_or_else(|| "Disrupted".into()),
            message: format!(
                "the pod {name} was stopped by the cluster: {}",
                condition.message.clone().unwrap_or_default()
            ),
        });
    }
    let terminated = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .clone()?;
    if terminated.reason.as_deref() == Some("OOMKilled") {
        return Some(Verdict::Failed {
            reason: "OOMKilled".into(),
            message: format!(
                "the container of pod {name} ran out of memory (OOMKilled); raise spec.resources.memory"
            ),
        });
    }
    Some(Verdict::Failed {
        reason: "Error".into(),
        message: format!("the container exited with {}", terminated.exit_code),
    })
}

/// The pods' labels the Job controller sets: how a Job's pods are found.
pub fn pod_selector(job_name: &str) -> String {
    format!("job-name={job_name}")
}

/// The MLflow run a Job works for.
pub fn run_of(job: &Job) -> Option<String> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RUN))
        .cloned()
}

/// The owner reference of a Job to its TrainingPipeline.
pub fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Job labels as a map, for tests and selectors.
pub fn labels_of(job: &Job) -> BTreeMap<String, String> {
    job.metadata.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctflow_core::pipeline::TrainingPipelineSpec;
    use ctflow_core::trigger::TriggerEvent;
    use ctflow_worker::execute::ExperimentRef;

    fn ct_job(spec: serde_json::Value) -> CtJob {
        let spec: TrainingPipelineSpec = serde_json::from_value(spec).expect("a spec");
        CtJob {
            pipeline_run: "0196f1c2a3b4c5d6e7f8091a2b3c4d5e".into(),
            pipeline: "ml-iris".into(),
            attempt: 2,
            spec,
            base_dir: "/".into(),
            trigger: TriggerEvent::new("ml-iris", "manual", "k".into()),
            snapshot_id: None,
            snapshot: None,
        }
    }

    fn request(job: &CtJob) -> RunRequest {
        RunRequest {
            uri: job.spec.project.uri.clone(),
            base_dir: "/".into(),
            version: job.spec.project.version.clone(),
            allow_dirty: true,
            entry_point: job.spec.project.entry_point.clone(),
            params: [
                ("C".to_string(), "0.5".to_string()),
                ("n".to_string(), "3".to_string()),
            ]
            .into(),
            env_manager: "virtualenv".into(),
            env_cache: "/tmp".into(),
            experiment: ExperimentRef::Name("iris".into()),
            run_name: None,
            run_id: None,
            tags: Vec::new(),
            env: vec![
                ("CTFLOW_PIPELINE".into(), job.pipeline.clone()),
                ("CTFLOW_WORKER".into(), "1:2".into()),
                ("CUDA_VISIBLE_DEVICES".into(), "".into()),
            ],
            ci_checks: job.spec.gates.ci.checks.clone(),
            ci_blocking: !job.spec.gates.ci.dry_run,
            timeout: None,
            user: "ctflow".into(),
            tracking_uri: "http://ctflow-server:5000".into(),
            backend: "kubernetes".into(),
            data: None,
        }
    }

    fn run() -> TrackedRun {
        TrackedRun {
            run_id: "abc123".into(),
            experiment_id: "7".into(),
            artifact_uri: "mlflow-artifacts:/7/abc123/artifacts".into(),
        }
    }

    fn build(spec: serde_json::Value, settings: &JobSettings) -> Result<serde_json::Value, String> {
        let job = ct_job(spec);
        let request = request(&job);
        let run = run();
        let owner = owner_reference("ctflow.dev/v1alpha1", "TrainingPipeline", "iris", "uid-1");
        job_manifest(
            &JobContext {
                job: &job,
                request: &request,
                run: &run,
                namespace: "ml",
                owner: Some(owner),
            },
            settings,
        )
        .map(|j| serde_json::to_value(j).expect("serialises"))
    }

    #[test]
    fn the_job_runs_ctflow_run_attached_to_the_run() {
        let manifest = build(
            json!({
                "project": {"uri": "/opt/iris", "entryPoint": "train", "image": "acme/iris:1", "version": "v2"},
                "timeout": "30m",
                "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
                "gates": {"ci": {"checks": [{"name": "lint", "run": "ruff check ."}], "dryRun": true}},
                "kubernetes": {
                    "nodeSelector": {"pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": "trainer",
                    "ttlAfterFinished": "10m",
                },
            }),
            &JobSettings::default(),
        )
        .expect("a Job");
        let meta = &manifest["metadata"];
        assert_eq!(meta["name"], "ctflow-0196f1c2a3b4c5d6e7f8091a2b3c4d5e-2");
        assert_eq!(meta["namespace"], "ml");
        assert_eq!(meta["labels"]["ctflow.dev/pipeline"], "ml-iris");
        assert_eq!(meta["labels"]["ctflow.dev/attempt"], "2");
        assert_eq!(meta["annotations"]["ctflow.dev/mlflow-run-id"], "abc123");
        assert_eq!(meta["ownerReferences"][0]["kind"], "TrainingPipeline");
        assert_eq!(meta["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        let spec = &manifest["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["activeDeadlineSeconds"], 1800);
        assert_eq!(spec["ttlSecondsAfterFinished"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "trainer");
        assert_eq!(pod["nodeSelector"]["pool"], "gpu");
        assert_eq!(pod["tolerations"][0]["operator"], "Exists");
        assert_eq!(
            spec["template"]["metadata"]["labels"]["ctflow.dev/pipeline-run"],
            "0196f1c2a3b4c5d6e7f8091a2b3c4d5e"
        );
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "job");
        assert_eq!(container["image"], "acme/iris:1");
        assert_eq!(container["command"], json!(["ctflow"]));
        assert_eq!(
            container["args"],
            json!([
                "run",
                "/opt/iris",
                "--entry-point",
                "train",
                "--env-manager",
                "local",
                "--allow-dirty",
                "--version",
                "v2",
                "-P",
                "C=0.5",
                "-P",
                "n=3"
            ])
        );
        let env: BTreeMap<String, String> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().into(),
                    e["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        assert_eq!(env["MLFLOW_RUN_ID"], "abc123");
        assert_eq!(env["MLFLOW_EXPERIMENT_ID"], "7");
        assert_eq!(env["MLFLOW_TRACKING_URI"], "http://ctflow-server:5000");
        assert_eq!(env["CTFLOW_PIPELINE"], "ml-iris");
        assert_eq!(env["CTFLOW_CI_SHADOW"], "true");
        let checks: serde_json::Value =
            serde_json::from_str(&env["CTFLOW_CI_CHECKS"]).expect("JSON");
        assert_eq!(checks, json!([{"name": "lint", "run": "ruff check ."}]));
        assert!(!env.contains_key("CTFLOW_WORKER") && !env.contains_key("CUDA_VISIBLE_DEVICES"));
        assert_eq!(
            container["resources"]["requests"],
            json!({"cpu": "2", "memory": "4Gi"})
        );
        assert_eq!(
            container["resources"]["limits"],
            json!({"nvidia.com/gpu": "1"})
        );
    }

    #[test]
    fn a_job_with_training_data_reads_its_snapshot_through_its_pipeline_run() {
        let mut job = ct_job(json!({"project": {"uri": "/opt/iris", "image": "acme/iris:1"}}));
        let request = request(&job);
        let run = run();
        let manifest = |job: &CtJob| {
            let built = job_manifest(
                &JobContext {
                    job,
                    request: &request,
                    run: &run,
                    namespace: "ml",
                    owner: None,
                },
                &JobSettings::default(),
            )
            .expect("a Job");
            serde_json::to_value(built).expect("serialises")["spec"]["template"]["spec"]
                ["containers"][0]["args"]
                .clone()
        };
        let args = manifest(&job);
        assert!(!args.to_string().contains("--pipeline-run"), "{args}");
        job.snapshot_id = Some("f00d".into());
        let args = manifest(&job);
        let args: Vec<&str> = args
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let at = args
            .iter()
            .position(|a| *a == "--pipeline-run")
            .expect("the flag");
        assert_eq!(args[at + 1], job.pipeline_run);
    }

    #[test]
    fn the_pod_template_overlay_merges_by_container_name() {
        let manifest = build(
            json!({
                "project": {"uri": "/opt/iris"},
                "kubernetes": {"podTemplate": {
                    "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": {
                        "priorityClassName": "batch",
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "iris"}}],
                        "containers": [
                            {"name": "job", "env": [{"name": "HF_HOME", "value": "/cache"}],
                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                            {"name": "proxy", "image": "envoy:1"},
                        ],
                    },
                }},
            }),
            &JobSettings { default_image: Some("ctflow/runner:1".into()), ..JobSettings::default() },
        )
        .expect("a Job");
        let template = &manifest["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"]["sidecar.istio.io/inject"],
            "false"
        );
        assert_eq!(
            template["metadata"]["labels"]["app.kubernetes.io/managed-by"], "ctflow",
            "labels kept"
        );
        assert_eq!(template["spec"]["priorityClassName"], "batch");
        assert_eq!(template["spec"]["restartPolicy"], "Never");
        assert_eq!(template["spec"]["volumes"][0]["name"], "data");
        let containers = template["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 2);
        let job = &containers[0];
        assert_eq!(
            job["image"], "ctflow/runner:1",
            "the worker's default image"
        );
        let env_names: Vec<&str> = job["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(
            env_names.contains(&"MLFLOW_RUN_ID") && env_names.contains(&"HF_HOME"),
            "{env_names:?}"
        );
        assert_eq!(job["volumeMounts"][0]["mountPath"], "/data");
        assert_eq!(containers[1]["name"], "proxy");
    }

    #[test]
    fn what_cannot_make_a_job_is_said_plainly() {
        let no_image = build(
            json!({"project": {"uri": "/opt/iris"}}),
            &JobSettings::default(),
        );
        assert!(
            no_image
                .expect_err("no image")
                .contains("spec.project.image")
        );
        let bad = build(
            json!({"project": {"uri": "/opt/iris", "image": "x"}, "kubernetes": {"podTemplate": {"spec": {"restartPolicy": 7}}}}),
            &JobSettings::default(),
        );
        assert!(
            bad.expect_err("invalid")
                .contains("spec.kubernetes.podTemplate")
        );
    }

    #[test]
    fn job_names_are_deterministic_and_fit_a_label() {
        assert_eq!(
            job_name("0196f1c2a3b4c5d6e7f8091a2b3c4d5e", 1),
            job_name("0196f1c2a3b4c5d6e7f8091a2b3c4d5e", 1)
        );
        assert_ne!(
            job_name("0196f1c2a3b4c5d6e7f8091a2b3c4d5e", 1),
            job_name("0196f1c2a3b4c5d6e7f8091a2b3c4d5e", 2)
        );
        let long = job_name(&"A".repeat(80), 123);
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    fn job_with(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .expect("a Job")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "j-abc"}, "status": status}))
            .expect("a Pod")
    }

    fn reason(verdict: Option<Verdict>) -> String {
        match verdict {
            Some(Verdict::Failed { reason, .. }) => reason,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn judging_jobs_and_pods() {
        let running = job_with(json!([]));
        assert_eq!(judge(&running, &[]), None);
        let complete = job_with(json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(judge(&complete, &[]), Some(Verdict::Succeeded));
        let deadline =
            job_with(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        assert_eq!(reason(judge(&deadline, &[])), "DeadlineExceeded");
        let failed = job_with(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
        );
        let exited = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "job", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 3}}}]}),
        );
        let Some(Verdict::Failed { message, .. }) = judge(&failed, std::slice::from_ref(&exited))
        else {
            panic!("failed");
        };
        assert_eq!(message, "the container exited with 3");
        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "job", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(reason(judge(&failed, &[oom])), "OOMKilled");
        let evicted = pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        let Some(Verdict::Failed {
            reason: why,
            message,
        }) = judge(&running, &[evicted])
        else {
            panic!("an evicted pod fails the job at once");
        };
        assert_eq!(why, "Evicted");
        assert!(message.contains("low on resource"), "{message}");
        let pulling = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "job", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"acme/nope:1\""}}}]}),
        );
        let Some(Verdict::Failed {
            reason: why,
            message,
        }) = judge(&running, &[pulling])
        else {
            panic!("a pod that cannot pull its image fails the job");
        };
        assert_eq!(why, "ImagePullBackOff");
        assert!(message.contains("acme/nope:1"), "{message}");
        let first_pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "job", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(judge(&running, &[first_pull]), None);
    }
}
