//! Where a model's files come from: a local directory, a Hugging Face cache directory, or the
//! Hugging Face Hub (downloaded with `hf-hub`, with retry, and read from the local cache first).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::resilience::{retry, RetryPolicy};

/// A model's location, as resolved from the user's `--model` / `embed.model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory holding `config.json`, `tokenizer.json` and `model.safetensors`.
    Dir(PathBuf),
    /// A repository on the Hugging Face Hub.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
}

impl ModelSource {
    /// Resolves `spec`: an existing directory (a plain model folder, or a Hugging Face cache
    /// folder `models--owner--name` with `snapshots/`), else a Hub id of the form `owner/name`.
    pub fn parse(spec: &str, revision: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            if path.join("snapshots").is_dir() {
                return Ok(ModelSource::Dir(snapshot_dir(path, revision)?));
            }
            return Ok(ModelSource::Dir(path.to_path_buf()));
        }
        if path.exists() {
            return Err(Error::invalid(format!(
                "model path {spec} is a file; give the model's directory"
            )));
        }
        if is_hub_id(spec) {
            return Ok(ModelSource::Hub {
                repo: spec.to_string(),
                revision: revision.to_string(),
            });
        }
        Err(Error::NotFound {
            what: format!(
                "model directory {spec} (it does not exist and is not a Hugging Face id like owner/name)"
            ),
        })
    }
}

/// The names a client may send as `model` for the embedding model given as `spec`, best first:
/// the configured name, the Hub id, and the short name (a Hub id's last part; a local
/// directory's name, or for a generic one such as `model` its README's title). Never a path.
pub fn model_names(spec: &str, configured: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = configured.map(str::to_string).into_iter().collect();
    let path = Path::new(spec);
    if path.is_dir() {
        let dir = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(repo) = base.strip_prefix("models--") {
            names.push(repo.replacen("--", "/", 1));
        } else if !base.is_empty() && !matches!(base, "model" | "models" | "snapshot") {
            names.push(base.to_string());
        } else if let Some(title) = readme_title(&dir) {
            names.push(title);
        } else if !base.is_empty() {
            names.push(base.to_string());
        }
    } else if is_hub_id(spec) {
        names.push(spec.to_string());
    }
    let shorts: Vec<String> = names
        .iter()
        .filter_map(|n| n.rsplit_once('/').map(|(_, s)| s.to_string()))
        .collect();
    for s in shorts {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    names.dedup();
    names
}

/// The first `# ` heading of a model card, when it reads like a model name (one word).
fn readme_title(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("README.md")).ok()?;
    let title = text.lines().find_map(|l| l.strip_prefix("# "))?.trim();
    let ok = !title.is_empty()
        && title.len() <= 96
        && title
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    ok.then(|| title.to_string())
}

/// Whether `asked` names the model served under `names`: exactly, or by its last part (so
/// `sentence-transformers/all-MiniLM-L6-v2` matches a directory named `all-MiniLM-L6-v2`).
pub fn model_matches(asked: &str, names: &[String]) -> bool {
    let short = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    names.iter().any(|m| asked == m || short(asked) == short(m))
}

fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('-')
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(owner) && ok(name)
}

/// In a Hugging Face cache folder, the snapshot that `refs/{revision}` names, or the revision's
/// own snapshot folder when it is a commit hash, or the only snapshot there is.
fn snapshot_dir(cache_dir: &Path, revision: &str) -> Result<PathBuf> {
    let snapshots = cache_dir.join("snapshots");
    let by_ref = cache_dir.join("refs").join(revision);
    if let Ok(hash) = std::fs::read_to_string(&by_ref) {
        let dir = snapshots.join(hash.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let direct = snapshots.join(revision);
    if direct.is_dir() {
        return Ok(direct);
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map_err(|e| Error::io(snapshots.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match entries.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::NotFound {
            what: format!("a snapshot in {}", snapshots.display()),
        }),
        _ => Err(Error::invalid(format!(
            "{} holds several snapshots and refs/{revision} names none of them",
            snapshots.display()
        ))),
    }
}

/// The files of a sentence-transformers model, found locally or downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json` (the transformer's architecture).
    pub config: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `modules.json`, if the model is a sentence-transformers model.
    pub modules: Option<PathBuf>,
    /// The pooling module's `config.json`, if any.
    pub pooling: Option<PathBuf>,
    /// `sentence_bert_config.json` (max_seq_length), if any.
    pub sentence_bert_config: Option<PathBuf>,
    /// `config_sentence_transformers.json` (prompts), if any.
    pub st_config: Option<PathBuf>,
    /// `tokenizer_config.json` (`model_max_length`, where sentence-transformers 6 keeps the
    /// maximum sequence length), if any.
    pub tokenizer_config: Option<PathBuf>,
    /// The `Dense` modules `modules.json` lists, in order.
    pub dense: Vec<DenseFiles>,
}

/// The files of one `Dense` module (e.g. `2_Dense/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseFiles {
    /// Its `config.json` (features and activation).
    pub config: PathBuf,
    /// Its weights: `model.safetensors`, or `pytorch_model.bin` in older models.
    pub weights: PathBuf,
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct ModuleEntry {
    #[serde(default)]
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The module folder of the pooling layer named in `modules.json`, e.g. `1_Pooling`.
fn pooling_dir(modules_json: &Path) -> Result<Option<String>> {
    let modules: Vec<ModuleEntry> = read_json(modules_json)?;
    Ok(modules
        .into_iter()
        .find(|m| m.kind.ends_with(".Pooling"))
        .map(|m| m.path))
}

/// The folders of the `Dense` modules named in `modules.json`, in order.
fn dense_dirs(modules_json: &Path) -> Result<Vec<String>> {
    let modules: Vec<ModuleEntry> = read_json(modules_json)?;
    Ok(modules
        .into_iter()
        .filter(|m| m.kind.ends_with(".Dense"))
        .map(|m| m.path)
        .collect())
}

/// The weight files a `Dense` module may have, preferred first.
const DENSE_WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::model(
            format!("{} is not valid JSON of the expected shape", path.display()),
            e,
        )
    })
}

impl ModelFiles {
    /// Collects the files of a local model directory; a missing required file is `NotFound`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let required = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::NotFound {
                    what: format!("model file {}", p.display()),
                })
            }
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let modules = optional("modules.json");
        let pooling = match &modules {
            Some(m) => pooling_dir(m)?.and_then(|d| optional(&format!("{d}/config.json"))),
            None => optional("1_Pooling/config.json"),
        };
        let mut dense = Vec::new();
        if let Some(m) = &modules {
            for d in dense_dirs(m)? {
                let weights = DENSE_WEIGHTS
                    .iter()
                    .find_map(|w| optional(&format!("{d}/{w}")))
                    .ok_or_else(|| Error::NotFound {
                        what: format!(
                            "model file {}",
                            dir.join(&d).join(DENSE_WEIGHTS[0]).display()
                        ),
                    })?;
                dense.push(DenseFiles {
                    config: required(&format!("{d}/config.json"))?,
                    weights,
                });
            }
        }
        Ok(Self {
            config: required("config.json")?,
            tokenizer: required("tokenizer.json")?,
            weights: required("model.safetensors")?,
            modules,
            pooling,
            sentence_bert_config: optional("sentence_bert_config.json"),
            st_config: optional("config_sentence_transformers.json"),
            tokenizer_config: optional("tokenizer_config.json"),
            dense,
        })
    }

    /// Gets the files for `source`: a directory is read in place; a Hub repository is served from
    /// the local Hugging Face cache when it has the files, and downloaded otherwise (retrying
    /// network failures under `policy`). `HF_HUB_OFFLINE=1` forbids downloads.
    pub async fn fetch(source: &ModelSource, policy: &RetryPolicy) -> Result<Self> {
        match source {
            ModelSource::Dir(dir) => Self::from_dir(dir),
            ModelSource::Hub { repo, revision } => fetch_hub(repo, revision, policy).await,
        }
    }
}

async fn fetch_hub(repo_id: &str, revision: &str, policy: &RetryPolicy) -> Result<ModelFiles> {
    let repo = hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    let cache = hf_hub::Cache::from_env().repo(repo.clone());
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.as_str(), "1" | "true" | "yes" | "ON" | "on"))
        .unwrap_or(false);
    let api = if offline {
        None
    } else {
        let api = hf_hub::api::tokio::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| Error::model("cannot build the Hugging Face Hub client", e))?;
        Some(api.repo(repo))
    };

    // Fetches one file: Ok(None) when the repository does not have it.
    let get = |name: String| {
        let cache = &cache;
        let api = &api;
        async move {
            if let Some(p) = cache.get(&name) {
                return Ok(Some(p));
            }
            // Offline, a file the cache lacks counts as absent.
            let Some(api) = api else {
                return Ok(None);
            };
            let attempt = || async {
                match api.get(&name).await {
                    Ok(p) => Ok(Some(p)),
                    Err(hf_hub::api::tokio::ApiError::RequestError(e))
                        if e.status().map(|s| s.as_u16()) == Some(404) =>
                    {
                        Ok(None)
                    }
                    Err(hf_hub::api::tokio::ApiError::RequestError(e))
                        if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) =>
                    {
                        Err(Error::config(
                            "embed.model",
                            format!(
                                "access to {repo_id} was refused (gated or private: set HF_TOKEN)"
                            ),
                        ))
                    }
                    Err(e) => Err(Error::Unavailable {
                        reason: format!("downloading {repo_id}/{name} failed"),
                        source: Some(Box::new(e)),
                    }),
                }
            };
            retry(policy, "hub download", attempt).await
        }
    };
    let required = |name: &str, got: Option<PathBuf>| {
        got.ok_or_else(|| Error::NotFound {
            what: if offline {
                format!(
                    "{name} of {repo_id}@{revision} in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
                )
            } else {
                format!("{name} in Hugging Face repository {repo_id}@{revision}")
            },
        })
    };
    let config = required("config.json", get("config.json".into()).await?)?;
    let tokenizer = required("tokenizer.json", get("tokenizer.json".into()).await?)?;
    let weights = required("model.safetensors", get("model.safetensors".into()).await?)?;
    let modules = get("modules.json".into()).await?;
    let pooling_folder = match &modules {
        Some(m) => pooling_dir(m)?,
        None => Some("1_Pooling".to_string()),
    };
    let pooling = match pooling_folder {
        Some(d) if !d.is_empty() => get(format!("{d}/config.json")).await?,
        _ => None,
    };
    let mut dense = Vec::new();
    if let Some(m) = &modules {
        for d in dense_dirs(m)? {
            let config_name = format!("{d}/config.json");
            let config = required(&config_name, get(config_name.clone()).await?)?;
            let mut weights = None;
            for w in DENSE_WEIGHTS {
                weights = get(format!("{d}/{w}")).await?;
                if weights.is_some() {
                    break;
                }
            }
            let weights = required(&format!("{d}/{}", DENSE_WEIGHTS[0]), weights)?;
            dense.push(DenseFiles { config, weights });
        }
    }
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
        modules,
        pooling,
        sentence_bert_config: get("sentence_bert_config.json".into()).await?,
        st_config: get("config_sentence_transformers.json".into()).await?,
        tokenizer_config: get("tokenizer_config.json".into()).await?,
        dense,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_never_show_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("all-MiniLM-L6-v2");
        std::fs::create_dir(&named).unwrap();
        let names = model_names(named.to_str().unwrap(), None);
        assert_eq!(names, vec!["all-MiniLM-L6-v2"]);
        assert!(model_matches(
            "sentence-transformers/all-MiniLM-L6-v2",
            &names
        ));
        assert!(!model_matches("text-embedding-3-small", &names));
        let generic = dir.path().join("model");
        std::fs::create_dir(&generic).unwrap();
        std::fs::write(
            generic.join("README.md"),
            "---\ntags: [x]\n---\n\n# all-MiniLM-L6-v2\n\n# Usage\n",
        )
        .unwrap();
        assert_eq!(
            model_names(generic.to_str().unwrap(), Some("mini")),
            vec!["mini", "all-MiniLM-L6-v2"]
        );
        assert_eq!(
            model_names("sentence-transformers/all-MiniLM-L6-v2", None),
            vec!["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"]
        );
        let cache = dir.path().join("models--BAAI--bge-small-en-v1.5");
        std::fs::create_dir(&cache).unwrap();
        assert_eq!(
            model_names(cache.to_str().unwrap(), None),
            vec!["BAAI/bge-small-en-v1.5", "bge-small-en-v1.5"]
        );
    }

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(is_hub_id("BAAI/bge-small-en-v1.5"));
        assert!(!is_hub_id("all-MiniLM-L6-v2"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
    }

    #[test]
    fn parse_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSource::parse(d, "main").unwrap(),
            ModelSource::Dir(dir.path().to_path_buf())
        );
        assert!(matches!(
            ModelSource::parse("owner/model", "main").unwrap(),
            ModelSource::Hub { .. }
        ));
        let err = ModelSource::parse("/definitely/not/here", "main").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    }

    #[test]
    fn cache_layout_resolves_the_ref() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models--o--m");
        std::fs::create_dir_all(root.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(root.join("snapshots/def456")).unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), "def456\n").unwrap();
        let src = ModelSource::parse(root.to_str().unwrap(), "main").unwrap();
        assert_eq!(src, ModelSource::Dir(root.join("snapshots/def456")));
        let src = ModelSource::parse(root.to_str().unwrap(), "abc123").unwrap();
        assert_eq!(src, ModelSource::Dir(root.join("snapshots/abc123")));
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
