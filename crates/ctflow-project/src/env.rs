//! Python environments for a project: `python_env.yaml` turned into a virtual environment,
//! built once per distinct spec and reused from a cache.
//!
//! A build happens in a private folder that is renamed into place when complete, so two
//! runs building the same environment at once never see or corrupt a half-built one; the
//! loser of the rename discards its copy and uses the winner's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::{Error, Result};

/// The content of a `python_env.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PythonEnvSpec {
    pub python: Option<String>,
    #[serde(default)]
    pub build_dependencies: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
}

impl PythonEnvSpec {
    /// Reads a `python_env.yaml`. Requirement files it names (`-r requirements.txt`, as
    /// MLflow writes next to a logged model) are read in, relative to the file's folder, so
    /// the dependencies (and the cache key) are the packages themselves.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut spec: PythonEnvSpec = serde_saphyr::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for list in [&mut spec.build_dependencies, &mut spec.dependencies] {
            let mut expanded = Vec::new();
            for line in list.iter() {
                expand_requirement(line, base, 0, &mut expanded)?;
            }
            *list = expanded;
        }
        Ok(spec)
    }

    /// A stable identity for the cache, from the normalised spec.
    pub fn cache_key(&self) -> String {
        let canonical = format!(
            "python={}\nbuild={}\ndeps={}\n",
            self.python.as_deref().unwrap_or(""),
            self.build_dependencies.join("\u{1f}"),
            self.dependencies.join("\u{1f}")
        );
        stable_hash(canonical.as_bytes())
    }
}

/// How deep requirement files may include one another.
const MAX_REQUIREMENT_NESTING: usize = 8;

/// Adds one requirement line to `out` as pip's arguments: a package stays as it is; an
/// `-r`/`--requirement` file is read in (its own includes too); a `-c` constraints file
/// gets an absolute path; other options are split into their words.
fn expand_requirement(line: &str, base: &Path, depth: usize, out: &mut Vec<String>) -> Result<()> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(());
    }
    if !line.starts_with('-') {
        out.push(line.to_string());
        return Ok(());
    }
    let (option, value) = match line.split_once(|c: char| c == '=' || c.is_whitespace()) {
        Some((option, value)) => (option, value.trim()),
        None => (line, ""),
    };
    match option {
        "-r" | "--requirement" => {
            if depth >= MAX_REQUIREMENT_NESTING {
                return Err(Error::Spec(format!(
                    "requirement files nest deeper than {MAX_REQUIREMENT_NESTING} at {value}"
                )));
            }
            let file = base.join(value);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
            let inner_base = file.parent().unwrap_or(base).to_path_buf();
            for inner in text.lines() {
                expand_requirement(inner, &inner_base, depth + 1, out)?;
            }
        }
        "-c" | "--constraint" => {
            out.push(option.to_string());
            out.push(base.join(value).display().to_string());
        }
        _ => out.extend(line.split_whitespace().map(str::to_string)),
    }
    Ok(())
}

/// A ready environment: put `bin` first on PATH to use it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedEnv {
    pub root: PathBuf,
    pub bin: PathBuf,
    /// False when an existing cached environment was reused.
    pub created: bool,
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .map_err(|e| Error::Io(format!("{what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Err(Error::Io(format!(
        "{what} failed ({}):\n{tail}",
        output.status
    )))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// `major.minor` of an interpreter, e.g. `3.11`.
fn python_version(python: &str) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// FNV-1a: a hash that stays the same across runs and builds (the std hasher does not).
fn stable_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Returns `cache_dir/name` when it holds a built environment; otherwise builds one with
/// `build` into a private staging folder and publishes it there.
fn cached(
    cache_dir: &Path,
    name: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PreparedEnv> {
    let root = cache_dir.join(name);
    let bin = root.join("bin");
    if bin.join("python").is_file() {
        return Ok(PreparedEnv {
            root,
            bin,
            created: false,
        });
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| Error::Io(format!("{}: {e}", cache_dir.display())))?;
    let staging = cache_dir.join(format!(".building-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = build(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // NB: the rename publishes a complete environment atomically; if another run won the
    // race, its environment is just as good.
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !bin.join("python").is_file() {
            return Err(Error::Io(format!(
                "cannot publish the environment at {}",
                root.display()
            )));
        }
        return Ok(PreparedEnv {
            root,
            bin,
            created: false,
        });
    }
    Ok(PreparedEnv {
        root,
        bin,
        created: true,
    })
}

/// Returns the cached environment for `spec`, building it under `cache_dir` when absent.
/// With `use_uv` and `uv` on PATH, uv creates it (and fetches the requested Python);
/// otherwise `python3 -m venv` and pip, which need a local interpreter of the requested
/// version.
pub fn prepare_virtualenv(
    spec: &PythonEnvSpec,
    cache_dir: &Path,
    use_uv: bool,
) -> Result<PreparedEnv> {
    let uv = use_uv && on_path("uv");
    cached(cache_dir, &format!("py-{}", spec.cache_key()), |target| {
        build(spec, target, uv)
    })
}

fn build(spec: &PythonEnvSpec, target: &Path, uv: bool) -> Result<()> {
    let python = target.join("bin").join("python");
    let packages: Vec<&String> = spec
        .build_dependencies
        .iter()
        .chain(&spec.dependencies)
        .collect();
    if uv {
        let mut venv = Command::new("uv");
        venv.arg("venv").arg(target);
        if let Some(version) = &spec.python {
            venv.args(["--python", version]);
        }
        run(&mut venv, "uv venv")?;
        if !packages.is_empty() {
            run(
                Command::new("uv")
                    .args(["pip", "install", "--python"])
                    .arg(&python)
                    .args(&packages),
                "uv pip install",
            )?;
        }
        return Ok(());
    }
    if let Some(wanted) = &spec.python {
        let have = python_version("python3").unwrap_or_default();
        let wanted_minor: String = wanted.split('.').take(2).collect::<Vec<_>>().join(".");
        if have != wanted_minor {
            return Err(Error::Spec(format!(
                "python_env.yaml asks for Python {wanted}, but python3 here is {}; install uv (--env-manager uv) or that Python",
                if have.is_empty() {
                    "missing".to_string()
                } else {
                    have
                }
            )));
        }
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(target),
        "python3 -m venv",
    )?;
    if !packages.is_empty() {
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&packages),
            "pip install",
        )?;
    }
    Ok(())
}

/// Returns the cached conda environment for a `conda.yaml`, creating it with
/// `conda env create` when absent. Needs `conda` on PATH.
pub fn prepare_conda(conda_yaml: &Path, cache_dir: &Path) -> Result<PreparedEnv> {
    if !on_path("conda") {
        return Err(Error::Spec(
            "the project's environment is a conda.yaml, but conda is not on PATH; install conda or use --env-manager local".to_string(),
        ));
    }
    let text = std::fs::read(conda_yaml)
        .map_err(|e| Error::Io(format!("{}: {e}", conda_yaml.display())))?;
    cached(
        cache_dir,
        &format!("conda-{}", stable_hash(&text)),
        |target| {
            run(
                Command::new("conda")
                    .args(["env", "create", "--quiet", "--yes", "--prefix"])
                    .arg(target)
                    .arg("--file")
                    .arg(conda_yaml),
                "conda env create",
            )
        },
    )
}

/// The default environment cache: $CTFLOW_ENV_DIR, else ~/.cache/ctflow/envs.
pub fn default_env_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("CTFLOW_ENV_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("ctflow").join("envs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_follow_the_spec() {
        let a = PythonEnvSpec {
            python: Some("3.11".into()),
            build_dependencies: vec!["pip".into()],
            dependencies: vec!["mlflow".into()],
        };
        let mut b = a.clone();
        assert_eq!(a.cache_key(), b.cache_key());
        b.dependencies.push("scikit-learn".into());
        assert_ne!(a.cache_key(), b.cache_key());
        assert_eq!(a.cache_key().len(), 16);
    }

    #[test]
    fn parses_python_env_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python_env.yaml");
        std::fs::write(
            &path,
            "python: \"3.11\"\nbuild_dependencies:\n  - pip\ndependencies:\n  - mlflow==3.17.2\n",
        )
        .unwrap();
        let spec = PythonEnvSpec::load(&path).unwrap();
        assert_eq!(spec.python.as_deref(), Some("3.11"));
        assert_eq!(spec.dependencies, vec!["mlflow==3.17.2"]);
        std::fs::write(&path, "python: [not, a, version]\n").unwrap();
        assert!(matches!(PythonEnvSpec::load(&path), Err(Error::Spec(_))));
    }

    #[test]
    fn requirement_files_are_read_in_relative_to_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::write(
            dir.path().join("python_env.yaml"),
            "python: 3.11.7\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n- --extra-index-url https://example.com/simple\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "mlflow==3.17.2\n# a comment\n\n-r more/extra.txt\n-c constraints.txt\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("more/extra.txt"), "scikit-learn==1.9.1\n").unwrap();
        let spec = PythonEnvSpec::load(&dir.path().join("python_env.yaml")).unwrap();
        let constraints = dir.path().join("constraints.txt").display().to_string();
        assert_eq!(
            spec.dependencies,
            vec![
                "mlflow==3.17.2",
                "scikit-learn==1.9.1",
                "-c",
                constraints.as_str(),
                "--extra-index-url",
                "https://example.com/simple",
            ]
        );
        let before = spec.cache_key();
        std::fs::write(dir.path().join("more/extra.txt"), "scikit-learn==1.8.0\n").unwrap();
        let changed = PythonEnvSpec::load(&dir.path().join("python_env.yaml")).unwrap();
        assert_ne!(
            before,
            changed.cache_key(),
            "the key follows the files' packages"
        );

        std::fs::write(dir.path().join("requirements.txt"), "-r requirements.txt\n").unwrap();
        assert!(matches!(
            PythonEnvSpec::load(&dir.path().join("python_env.yaml")),
            Err(Error::Spec(_))
        ));
        std::fs::remove_file(dir.path().join("requirements.txt")).unwrap();
        assert!(matches!(
            PythonEnvSpec::load(&dir.path().join("python_env.yaml")),
            Err(Error::Io(_))
        ));
    }

    #[test]
    fn an_environment_is_built_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PythonEnvSpec {
            python: None,
            build_dependencies: vec![],
            dependencies: vec![],
        };
        let first = prepare_virtualenv(&spec, dir.path(), false).unwrap();
        assert!(first.created && first.bin.join("python").is_file());
        let second = prepare_virtualenv(&spec, dir.path(), false).unwrap();
        assert!(!second.created);
        assert_eq!(first.root, second.root);
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".building")
        }));
    }
}
