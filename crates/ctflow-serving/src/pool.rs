//! The Python side: N worker processes, each with the model loaded, taking one request at
//! a time from a shared queue. A worker that dies fails its request with 503 and is
//! started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Error, Prediction, Result};

const WORKER_SCRIPT: &str = include_str!("worker.py");
/// How long a worker may take to load the model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Requests waiting for a free worker.
const QUEUE: usize = 1024;

type Reply = oneshot::Sender<std::result::Result<Prediction, String>>;

pub struct PythonPool {
    queue: mpsc::Sender<(Value, Reply)>,
    mlflow_version: String,
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl PythonPool {
    /// Starts `workers` processes and waits until each has loaded the model.
    pub async fn start(python: &Path, model_dir: &Path, workers: usize) -> Result<PythonPool> {
        let (queue, requests) = mpsc::channel::<(Value, Reply)>(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        let mut mlflow_version = String::new();
        for index in 0..workers.max(1) {
            let (process, version) = spawn(python, model_dir).await?;
            mlflow_version = version;
            tokio::spawn(serve(
                index,
                process,
                python.to_path_buf(),
                model_dir.to_path_buf(),
                requests.clone(),
            ));
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

    /// Sends one request line to the next free worker.
    pub async fn predict(&self, request: Value) -> std::result::Result<Prediction, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| "the model workers have stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the model worker stopped while predicting".to_string())?
    }
}

async fn spawn(python: &Path, model_dir: &Path) -> Result<(Process, String)> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(WORKER_SCRIPT)
        .arg(model_dir)
        .env("PYTHONUNBUFFERED", "1")
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

/// One worker's loop: take a request, answer it; start the process again if it dies.
async fn serve(
    index: usize,
    mut process: Process,
    python: PathBuf,
    model_dir: PathBuf,
    requests: Arc<Mutex<mpsc::Receiver<(Value, Reply)>>>,
) {
    loop {
        let next = requests.lock().await.recv().await;
        let Some((request, reply)) = next else {
            let _ = process.child.kill().await;
            return;
        };
        match exchange(&mut process, &request).await {
            Ok(answer) => {
                let _ = reply.send(Ok(answer));
            }
            Err(why) => {
                tracing::warn!(
                    worker = index,
                    why,
                    "a model worker stopped; starting another"
                );
                let _ = reply.send(Err(format!("the model worker stopped: {why}")));
                let _ = process.child.kill().await;
                loop {
                    match spawn(&python, &model_dir).await {
                        Ok((fresh, _)) => {
                            process = fresh;
                            break;
                        }
                        Err(error) => {
                            tracing::error!(worker = index, %error, "cannot start a model worker; retrying");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            }
        }
    }
}

async fn exchange(
    process: &mut Process,
    request: &Value,
) -> std::result::Result<Prediction, String> {
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    process
        .stdin
        .write_all(&line)
        .await
        .map_err(|e| e.to_string())?;
    process.stdin.flush().await.map_err(|e| e.to_string())?;
    let answer = process
        .stdout
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "it exited".to_string())?;
    let answer: Value =
        serde_json::from_str(&answer).map_err(|e| format!("it said '{answer}': {e}"))?;
    if let Some(message) = answer["error"].as_str() {
        return Ok(Prediction::Failed(message.to_string()));
    }
    Ok(Prediction::Predictions(answer["predictions"].clone()))
}
