//! The MLproject file, its entry points, and parameter typing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::format::render_template;
use crate::quote::shell_quote;
use crate::{Error, Result};

/// How the project's software environment is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// No environment file: run with whatever interpreter is current.
    None,
    /// `python_env: python_env.yaml` (python version, build and run dependencies).
    Python(PathBuf),
    /// `conda_env: conda.yaml`.
    Conda(PathBuf),
    /// `docker_env: {image: ...}`.
    Docker { image: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Float,
    Int,
    Path,
    Uri,
}

impl ParamType {
    fn parse(raw: &str) -> Result<ParamType> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "string" | "str" => Ok(ParamType::String),
            "float" | "double" => Ok(ParamType::Float),
            "int" | "integer" => Ok(ParamType::Int),
            "path" => Ok(ParamType::Path),
            "uri" => Ok(ParamType::Uri),
            other => Err(Error::Spec(format!(
                "unknown parameter type '{other}' (expected string, float, int, path or uri)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParamType,
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntryPoint {
    pub name: String,
    pub command: String,
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub environment: Environment,
    pub entry_points: BTreeMap<String, EntryPoint>,
}

/// An entry point's command, ready for a shell, and the parameter values to log.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedCommand {
    pub command: String,
    /// Every parameter with its final value (typed, defaulted, paths made absolute), and
    /// the extra ones the user passed, in name order.
    pub parameters: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawScalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl RawScalar {
    fn into_string(self) -> String {
        match self {
            RawScalar::Text(s) => s,
            RawScalar::Int(i) => i.to_string(),
            RawScalar::Float(f) => f.to_string(),
            RawScalar::Bool(b) => if b { "True" } else { "False" }.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawParameter {
    Shorthand(String),
    Full {
        #[serde(rename = "type")]
        kind: Option<String>,
        default: Option<RawScalar>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryPoint {
    command: String,
    #[serde(default)]
    parameters: BTreeMap<String, RawParameter>,
}

#[derive(Deserialize)]
struct RawDocker {
    image: String,
}

#[derive(Deserialize)]
struct RawProject {
    name: Option<String>,
    python_env: Option<String>,
    conda_env: Option<String>,
    docker_env: Option<RawDocker>,
    #[serde(default)]
    entry_points: BTreeMap<String, RawEntryPoint>,
}

fn find_mlproject(dir: &Path) -> Result<Option<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::Io(e.to_string()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .eq_ignore_ascii_case("MLproject")
            && entry.path().is_file()
        {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// A file named by the spec must stay inside the project folder.
fn project_file(dir: &Path, relative: &str, field: &str) -> Result<PathBuf> {
    let path = Path::new(relative);
    if path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::Spec(format!(
            "{field} must be a file inside the project, got '{relative}'"
        )));
    }
    let full = dir.join(path);
    if !full.is_file() {
        return Err(Error::Spec(format!(
            "{field} names '{relative}', which does not exist in the project"
        )));
    }
    Ok(full)
}

impl Project {
    /// Reads a project folder: its MLproject file (any capitalisation) if there is one.
    pub fn load(dir: impl AsRef<Path>) -> Result<Project> {
        let dir = dir.as_ref();
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
        if !dir.is_dir() {
            return Err(Error::Io(format!("{} is not a folder", dir.display())));
        }
        let Some(file) = find_mlproject(&dir)? else {
            let environment = if dir.join("python_env.yaml").is_file() {
                Environment::Python(dir.join("python_env.yaml"))
            } else if dir.join("conda.yaml").is_file() {
                Environment::Conda(dir.join("conda.yaml"))
            } else {
                Environment::None
            };
            return Ok(Project {
                dir,
                name: None,
                environment,
                entry_points: BTreeMap::new(),
            });
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::Io(format!("{}: {e}", file.display())))?;
        Self::parse(&dir, &text)
    }

    /// Parses MLproject text for a project in `dir`.
    pub fn parse(dir: &Path, text: &str) -> Result<Project> {
        let raw: RawProject =
            serde_saphyr::from_str(text).map_err(|e| Error::Spec(e.to_string()))?;
        let declared = [
            raw.python_env.is_some(),
            raw.conda_env.is_some(),
            raw.docker_env.is_some(),
        ];
        if declared.iter().filter(|d| **d).count() > 1 {
            return Err(Error::Spec(
                "only one of python_env, conda_env and docker_env may be given".to_string(),
            ));
        }
        let environment = match (raw.python_env, raw.conda_env, raw.docker_env) {
            (Some(p), _, _) => Environment::Python(project_file(dir, &p, "python_env")?),
            (_, Some(c), _) => Environment::Conda(project_file(dir, &c, "conda_env")?),
            (_, _, Some(d)) if d.image.trim().is_empty() => {
                return Err(Error::Spec(
                    "docker_env.image must not be empty".to_string(),
                ));
            }
            (_, _, Some(d)) => Environment::Docker { image: d.image },
            _ => Environment::None,
        };
        let mut entry_points = BTreeMap::new();
        for (name, raw_entry) in raw.entry_points {
            if raw_entry.command.trim().is_empty() {
                return Err(Error::Spec(format!(
                    "entry point '{name}' has an empty command"
                )));
            }
            let mut parameters = Vec::new();
            for (param, spec) in raw_entry.parameters {
                let (kind, default) = match spec {
                    RawParameter::Shorthand(kind) => (ParamType::parse(&kind)?, None),
                    RawParameter::Full { kind, default } => (
                        ParamType::parse(kind.as_deref().unwrap_or("string"))?,
                        default.map(RawScalar::into_string),
                    ),
                };
                parameters.push(Parameter {
                    name: param,
                    kind,
                    default,
                });
            }
            entry_points.insert(
                name.clone(),
                EntryPoint {
                    name,
                    command: raw_entry.command,
                    parameters,
                },
            );
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            name: raw.name,
            environment,
            entry_points,
        })
    }

    /// The named entry point, or a `.py` / `.sh` file of the project run directly (its
    /// parameters are then all passed as `--key value`).
    pub fn entry_point(&self, name: &str) -> Result<EntryPoint> {
        if let Some(entry) = self.entry_points.get(name) {
            return Ok(entry.clone());
        }
        let runner = if name.ends_with(".py") {
            "python"
        } else if name.ends_with(".sh") {
            "bash"
        } else {
            return Err(Error::UnknownEntryPoint(name.to_string()));
        };
        project_file(&self.dir, name, "entry point")
            .map_err(|_| Error::UnknownEntryPoint(name.to_string()))?;
        Ok(EntryPoint {
            name: name.to_string(),
            command: format!("{runner} {}", shell_quote(name)),
            parameters: Vec::new(),
        })
    }
}

fn typed_value(param: &Parameter, value: &str, cwd: &Path) -> Result<String> {
    let bad = |expected| Error::BadValue {
        name: param.name.clone(),
        expected,
        value: value.to_string(),
    };
    match param.kind {
        ParamType::String => Ok(value.to_string()),
        ParamType::Float => value
            .trim()
            .parse::<f64>()
            .map(|_| value.trim().to_string())
            .map_err(|_| bad("a float")),
        ParamType::Int => value
            .trim()
            .parse::<i64>()
            .map(|_| value.trim().to_string())
            .map_err(|_| bad("an integer")),
        ParamType::Path => {
            if value.contains("://") {
                return Ok(value.to_string());
            }
            let path = cwd.join(value);
            let absolute = path.canonicalize().map_err(|_| Error::MissingPath {
                name: param.name.clone(),
                value: value.to_string(),
            })?;
            Ok(absolute.to_string_lossy().into_owned())
        }
        ParamType::Uri => {
            if value.contains("://") || value.contains(":/") {
                Ok(value.to_string())
            } else {
                Ok(cwd.join(value).to_string_lossy().into_owned())
            }
        }
    }
}

impl EntryPoint {
    /// Renders the command for `given` parameter values. Declared parameters take the
    /// given value or their default and are checked against their type; parameters the
    /// entry point does not declare are appended as `--key value`. Every value is
    /// shell-quoted. `cwd` is where relative `path`/`uri` values are resolved from.
    pub fn render(&self, given: &BTreeMap<String, String>, cwd: &Path) -> Result<RenderedCommand> {
        let missing: Vec<&str> = self
            .parameters
            .iter()
            .filter(|p| p.default.is_none() && !given.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingParameters(missing.join(", ")));
        }
        let mut values = BTreeMap::new();
        let mut quoted = BTreeMap::new();
        for param in &self.parameters {
            let raw = given
                .get(&param.name)
                .or(param.default.as_ref())
                .map(String::as_str)
                .unwrap_or_default();
            let value = typed_value(param, raw, cwd)?;
            quoted.insert(param.name.clone(), shell_quote(&value));
            values.insert(param.name.clone(), value);
        }
        let mut command = render_template(&self.command, &quoted)?;
        for (name, value) in given {
            if !self.parameters.iter().any(|p| &p.name == name) {
                command.push_str(&format!(" --{} {}", shell_quote(name), shell_quote(value)));
                values.insert(name.clone(), value.clone());
            }
        }
        Ok(RenderedCommand {
            command,
            parameters: values.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRIS: &str = r#"
name: iris
python_env: python_env.yaml
entry_points:
  main:
    parameters:
      C: {type: float, default: 0.05}
      max_iter: {type: int, default: 1000}
      data: path
      label: {type: string, default: "run one"}
    command: "python train.py -C {C} --max-iter {max_iter} --data {data} --label {label}"
  validate:
    parameters:
      model_uri: uri
    command: "python validate.py {model_uri}"
"#;

    fn project(text: &str) -> (tempfile::TempDir, Result<Project>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("python_env.yaml"), "python: '3.11'\n").unwrap();
        std::fs::write(dir.path().join("conda.yaml"), "name: x\n").unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)\n").unwrap();
        std::fs::write(dir.path().join("data.csv"), "a\n1\n").unwrap();
        std::fs::write(dir.path().join("MLProject"), text).unwrap();
        let loaded = Project::load(dir.path());
        (dir, loaded)
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_iris_project_and_renders_main() {
        let (dir, project) = project(IRIS);
        let project = project.unwrap();
        assert_eq!(project.name.as_deref(), Some("iris"));
        assert!(matches!(project.environment, Environment::Python(_)));
        let main = project.entry_point("main").unwrap();
        let rendered = main
            .render(
                &args(&[("data", "data.csv"), ("C", "0.1"), ("extra", "x y")]),
                dir.path(),
            )
            .unwrap();
        let data = dir.path().canonicalize().unwrap().join("data.csv");
        assert_eq!(
            rendered.command,
            format!(
                "python train.py -C 0.1 --max-iter 1000 --data {} --label 'run one' --extra 'x y'",
                data.display()
            )
        );
        assert!(
            rendered
                .parameters
                .contains(&("C".to_string(), "0.1".to_string()))
        );
        assert!(
            rendered
                .parameters
                .contains(&("extra".to_string(), "x y".to_string()))
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let (dir, project) = project(IRIS);
        let main = project.unwrap().entry_point("main").unwrap();
        assert_eq!(
            main.render(&args(&[]), dir.path()),
            Err(Error::MissingParameters("data".into()))
        );
        let err = main
            .render(&args(&[("data", "data.csv"), ("C", "abc")]), dir.path())
            .unwrap_err();
        assert_eq!(err.to_string(), "parameter 'C' must be a float, got 'abc'");
        let err = main
            .render(
                &args(&[("data", "data.csv"), ("max_iter", "1.5")]),
                dir.path(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter 'max_iter' must be an integer, got '1.5'"
        );
        let err = main
            .render(&args(&[("data", "nope.csv")]), dir.path())
            .unwrap_err();
        assert_eq!(
            err,
            Error::MissingPath {
                name: "data".into(),
                value: "nope.csv".into()
            }
        );
    }

    #[test]
    fn injection_stays_quoted() {
        let (dir, project) = project(IRIS);
        let main = project.unwrap().entry_point("main").unwrap();
        let rendered = main
            .render(
                &args(&[("data", "data.csv"), ("label", "x; rm -rf /")]),
                dir.path(),
            )
            .unwrap();
        assert!(
            rendered.command.ends_with("--label 'x; rm -rf /'"),
            "{}",
            rendered.command
        );
        let rendered = main
            .render(&args(&[("data", "data.csv"), ("a;b", "$(id)")]), dir.path())
            .unwrap();
        assert!(
            rendered.command.ends_with("--'a;b' '$(id)'"),
            "{}",
            rendered.command
        );
    }

    #[test]
    fn spec_errors() {
        let (_, p) =
            project("python_env: python_env.yaml\nconda_env: conda.yaml\nentry_points: {}\n");
        assert!(matches!(p, Err(Error::Spec(m)) if m.contains("only one of")));
        let (_, p) = project(
            "entry_points:\n  main:\n    parameters:\n      x: decimal\n    command: run {x}\n",
        );
        assert!(matches!(p, Err(Error::Spec(m)) if m.contains("unknown parameter type 'decimal'")));
        let (_, p) = project("python_env: ../outside.yaml\n");
        assert!(matches!(p, Err(Error::Spec(_))));
        let (_, p) = project("entry_points: [not, a, map]\n");
        assert!(matches!(p, Err(Error::Spec(_))));
        let (_, p) = project("docker_env: {image: 'ctflow/iris:1'}\n");
        assert_eq!(
            p.unwrap().environment,
            Environment::Docker {
                image: "ctflow/iris:1".into()
            }
        );
    }

    #[test]
    fn projects_without_mlproject_run_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "print(1)\n").unwrap();
        let project = Project::load(dir.path()).unwrap();
        assert_eq!(project.environment, Environment::None);
        let entry = project.entry_point("train.py").unwrap();
        let rendered = entry.render(&args(&[("C", "0.05")]), dir.path()).unwrap();
        assert_eq!(rendered.command, "python train.py --C 0.05");
        assert_eq!(
            project.entry_point("missing.py"),
            Err(Error::UnknownEntryPoint("missing.py".into()))
        );
        assert_eq!(
            project.entry_point("main"),
            Err(Error::UnknownEntryPoint("main".into()))
        );
    }

    #[test]
    fn uri_parameters_keep_schemes_and_absolutise_paths() {
        let (dir, project) = project(IRIS);
        let validate = project.unwrap().entry_point("validate").unwrap();
        let rendered = validate
            .render(&args(&[("model_uri", "models:/iris@champion")]), dir.path())
            .unwrap();
        assert_eq!(rendered.command, "python validate.py models:/iris@champion");
        let rendered = validate
            .render(&args(&[("model_uri", "local/model")]), dir.path())
            .unwrap();
        assert!(
            rendered
                .command
                .contains(&dir.path().join("local/model").display().to_string())
        );
    }

    proptest::proptest! {
        /// MLproject text a user may write, right or wrong, is a project or an error,
        /// never a panic.
        #[test]
        fn any_mlproject_text_is_a_project_or_an_error(
            text in ".{0,300}",
            shaped in proptest::collection::vec(
                (
                    0usize..4,
                    proptest::sample::select(vec![
                        "name", "entry_points", "main", "parameters", "command", "type",
                        "default", "python_env", "conda_env", "docker_env", "image", "- ", "",
                    ]),
                    proptest::sample::select(vec![
                        "", "float", "int", "path", "uri", "string", "\"python t.py {C}\"",
                        "{C}", "{", "}", "0.5", "[]", "{}", "~", "'", "x.yaml", "../../etc",
                    ]),
                ),
                0..16,
            ),
        ) {
            let dir = std::path::Path::new("/nonexistent-project");
            let _ = Project::parse(dir, &text);
            let shaped: String = shaped
                .into_iter()
                .map(|(depth, k, v)| format!("{}{k}: {v}\n", "  ".repeat(depth)))
                .collect();
            let _ = Project::parse(dir, &shaped);
        }
    }
}
