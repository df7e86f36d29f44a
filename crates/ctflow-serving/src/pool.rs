//! The Python side: N worker processes, each with the model loaded, taking requests from a
//! shared queue. A free worker takes every compatible request already waiting (up to
//! `max_batch`, optionally waiting `batch_wait` for more) and sends them as one model
//! call, so under load the per-call overhead of Python is paid once per batch. A worker
//! that dies fails its requests with 503 and is started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::metrics::ServingMetrics;
use crate::{Error, Prediction, Result};

const WORKER_SCRIPT: &str = include_str!("worker.py");
/// How long a worker may take to load the model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Requests waiting for a free worker.
const QUEUE: usize = 4096;

type Answer = std::result::Result<Prediction, String>;

/// One request on the queue: its line, its batch key (`None`: goes alone), the reply.
struct Queued {
    line: Value,
    key: Option<String>,
    reply: oneshot::Sender<Answer>,
}

/// How much of the CPU the workers claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// As the server itself.
    #[default]
    Normal,
    /// Behind everything else on the machine (Linux's `SCHED_IDLE`, else nice 19): a
    /// shadowing challenger takes only the CPU the champion leaves.
    Background,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Background => "background",
        }
    }
}

/// How requests are grouped into model calls.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most requests in one model call (1: no batching).
    pub max_batch: usize,
    /// How long a worker that took a request waits for more to join it (zero: only the
    /// ones already queued).
    pub wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch: 32,
            wait: Duration::ZERO,
        }
    }
}

pub struct PythonPool {
    queue: mpsc::Sender<Queued>,
    mlflow_version: String,
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

struct Worker {
    index: usize,
    python: PathBuf,
    model_dir: PathBuf,
    priority: Priority,
    batching: Batching,
    metrics: Arc<ServingMetrics>,
}

impl PythonPool {
    /// Starts `workers` processes and waits until each has loaded the model.
    pub async fn start(
        python: &Path,
        model_dir: &Path,
        workers: usize,
        batching: Batching,
        priority: Priority,
        metrics: Arc<ServingMetrics>,
    ) -> Result<PythonPool> {
        let (queue, requests) = mpsc::channel::<Queued>(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        let mut mlflow_version = String::new();
        for index in 0..workers.max(1) {
            let (process, version) = spawn(python, model_dir, priority).await?;
            mlflow_version = version;
            let worker = Worker {
                index,
                python: python.to_path_buf(),
                model_dir: model_dir.to_path_buf(),
                priority,
                batching,
                metrics: metrics.clone(),
            };
            tokio::spawn(worker.serve(process, requests.clone()));
        }
        Ok(PythonPool {
            queue,
            mlflow_version,
        })
    }

    /// The MLflow version the workers run (what `/version` answers).
    pub fn mlflow_version(&self) -> &str {
        &self.mlflow_version
    }

    /// Sends one request to the next free worker; requests with the same `batch_key` may
    /// share a model call.
    pub async fn predict(&self, line: Value, batch_key: Option<String>) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued {
                line,
                key: batch_key,
                reply,
            })
            .await
            .map_err(|_| "the model workers have stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the model worker stopped while predicting".to_string())?
    }
}

async fn spawn(python: &Path, model_dir: &Path, priority: Priority) -> Result<(Process, String)> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(WORKER_SCRIPT)
        .arg(model_dir)
        .env("PYTHONUNBUFFERED", "1")
        .env("CTFLOW_WORKER_PRIORITY", priority.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Workers(format!("cannot start {}: {e}", python.display())))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(Error::Workers("the worker has no pipes".into()));
    };
    let mut stdout = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(LOAD_TIMEOUT, stdout.next_line())
        .await
        .map_err(|_| Error::Workers("loading the model took too long".into()))?;
    let line = match ready {
        Ok(Some(line)) => line,
        _ => {
            let status = child.wait().await.ok().and_then(|s| s.code());
            return Err(Error::Workers(format!(
                "a worker exited before it loaded the model (exit code {status:?}; its output is above)"
            )));
        }
    };
    let hello: Value = serde_json::from_str(&line)
        .map_err(|e| Error::Workers(format!("a worker said '{line}': {e}")))?;
    let version = hello["mlflow_version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((
        Process {
            child,
            stdin,
            stdout,
        },
        version,
    ))
}

impl Worker {
    /// Takes requests and answers them; starts the process again if it dies.
    async fn serve(self, mut process: Process, requests: Arc<Mutex<mpsc::Receiver<Queued>>>) {
        loop {
            let Some(taken) = self.take(&requests).await else {
                let _ = process.child.kill().await;
                return;
            };
            let (batch, alone) = group(taken);
            let mut calls: Vec<Vec<Queued>> = Vec::new();
            if !batch.is_empty() {
                calls.push(batch);
            }
            calls.extend(alone.into_iter().map(|q| vec![q]));
            for call in calls {
                self.metrics.batched(call.len());
                match exchange(&mut process, &call).await {
                    Ok(answers) => {
                        for (queued, answer) in call.into_iter().zip(answers) {
                            let _ = queued.reply.send(Ok(answer));
                        }
                    }
                    Err(why) => {
                        tracing::warn!(
                            worker = self.index,
                            why,
                            "a model worker stopped; starting another"
                        );
                        for queued in call {
                            let _ = queued
                                .reply
                                .send(Err(format!("the model worker stopped: {why}")));
                        }
                        let _ = process.child.kill().await;
                        process = self.respawn().await;
                    }
                }
            }
        }
    }

    /// The next request and whatever else is waiting (up to `max_batch`).
    async fn take(&self, requests: &Mutex<mpsc::Receiver<Queued>>) -> Option<Vec<Queued>> {
        let mut queue = requests.lock().await;
        let first = queue.recv().await?;
        let mut taken = vec![first];
        let deadline = tokio::time::Instant::now() + self.batching.wait;
        while taken.len() < self.batching.max_batch.max(1) {
            match queue.try_recv() {
                Ok(next) => taken.push(next),
                Err(_) if self.batching.wait.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(next)) => taken.push(next),
                    _ => break,
                },
            }
        }
        Some(taken)
    }

    async fn respawn(&self) -> Process {
        loop {
            match spawn(&self.python, &self.model_dir, self.priority).await {
                Ok((fresh, _)) => return fresh,
                Err(error) => {
                    tracing::error!(worker = self.index, %error, "cannot start a model worker; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

/// The requests that can share a model call with the first one, and the others.
fn group(taken: Vec<Queued>) -> (Vec<Queued>, Vec<Queued>) {
    let key = taken.first().and_then(|q| q.key.clone());
    match key {
        None => (Vec::new(), taken),
        Some(key) => taken
            .into_iter()
            .partition(|q| q.key.as_deref() == Some(key.as_str())),
    }
}

async fn exchange(
    process: &mut Process,
    call: &[Queued],
) -> std::result::Result<Vec<Prediction>, String> {
    let request = match call {
        [one] => one.line.clone(),
        many => json!({ "batch": many.iter().map(|q| q.line.clone()).collect::<Vec<_>>() }),
    };
    let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    process
        .stdin
        .write_all(&line)
        .await
        .map_err(|e| e.to_string())?;
    process.stdin.flush().await.map_err(|e| e.to_string())?;
    let text = process
        .stdout
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "it exited".to_string())?;
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| format!("it said '{text}': {e}"))?;
    let answers: Vec<Value> = match answer.get("answers") {
        Some(Value::Array(answers)) => answers.clone(),
        Some(_) => return Err(format!("it said '{text}'")),
        None => vec![answer],
    };
    if answers.len() != call.len() {
        return Err(format!(
            "it answered {} of {} requests",
            answers.len(),
            call.len()
        ));
    }
    Ok(answers.into_iter().map(prediction).collect())
}

fn prediction(answer: Value) -> Prediction {
    match answer["error"].as_str() {
        Some(message) => Prediction::Failed(message.to_string()),
        None => Prediction::Predictions(answer["predictions"].clone()),
    }
}
