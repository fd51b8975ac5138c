//! The last-known route table on local disk: the stages and generation a proxy last applied,
//! rewritten (atomically) on every change. A proxy that starts while its store is
//! unreachable serves from it rather than from the plan's initial stages, which the store
//! may contradict; without it, the proxy refuses to start.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strangler_plan::Stage;
use strangler_store::{now_ms, timestamp};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastKnown {
    /// The store it came from (a file path, or a URL without its password).
    pub store: String,
    pub generation: i64,
    /// Route → stage, as the store had them (`legacy`, `canary:10`, …).
    pub stages: BTreeMap<String, StoredStage>,
    pub written_at: String,
}

/// A stage as the file writes it: its name and, for a canary, the percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoredStage {
    pub stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LastKnownError {
    #[error("cannot read the last-known route table {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the last-known route table {path} is unreadable: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write the last-known route table {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LastKnown {
    pub fn new(store: &str, generation: i64, stages: &HashMap<String, Stage>) -> Self {
        Self {
            store: store.to_string(),
            generation,
            stages: stages
                .iter()
                .map(|(route, stage)| {
                    let percent =
                        matches!(stage, Stage::Canary { .. }).then(|| stage.percent_new());
                    (
                        route.clone(),
                        StoredStage {
                            stage: stage.name(),
                            percent,
                        },
                    )
                })
                .collect(),
            written_at: timestamp(now_ms()),
        }
    }

    /// The stages, as the route table wants them.
    pub fn stages(&self, path: &Path) -> Result<HashMap<String, Stage>, LastKnownError> {
        self.stages
            .iter()
            .map(|(route, s)| {
                Stage::from_parts(s.stage, s.percent)
                    .map(|stage| (route.clone(), stage))
                    .map_err(|message| LastKnownError::Invalid {
                        path: path.to_path_buf(),
                        message: format!("route {route}: {message}"),
                    })
            })
            .collect()
    }

    /// Reads the file; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, LastKnownError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LastKnownError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let raw: RawLastKnown =
            serde_json::from_str(&text).map_err(|err| LastKnownError::Invalid {
                path: path.to_path_buf(),
                message: err.to_string(),
            })?;
        let mut stages = BTreeMap::new();
        for (route, s) in raw.stages {
            let stage = Stage::from_parts(&s.stage, s.percent).map_err(|message| {
                LastKnownError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("route {route}: {message}"),
                }
            })?;
            stages.insert(
                route,
                StoredStage {
                    stage: stage.name(),
                    percent: s.percent,
                },
            );
        }
        Ok(Some(Self {
            store: raw.store,
            generation: raw.generation,
            stages,
            written_at: raw.written_at,
        }))
    }

    /// Writes the file through a temporary file and a rename, so a reader (or a crash)
    /// never sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), LastKnownError> {
        let err = |source| LastKnownError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&body).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[derive(Deserialize)]
struct RawLastKnown {
    store: String,
    generation: i64,
    stages: BTreeMap<String, RawStage>,
    written_at: String,
}

#[derive(Deserialize)]
struct RawStage {
    stage: String,
    percent: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("last-known.json");
        assert!(LastKnown::read(&path).unwrap().is_none());
        let stages = HashMap::from([
            ("students".to_string(), Stage::Canary { percent: 25 }),
            ("finance".to_string(), Stage::Cutover),
        ]);
        LastKnown::new("postgres://u:***@db/x", 7, &stages)
            .write(&path)
            .unwrap();
        let back = LastKnown::read(&path).unwrap().unwrap();
        assert_eq!(back.generation, 7);
        assert_eq!(back.stages(&path).unwrap(), stages);
        std::fs::write(&path, "{not json").unwrap();
        let err = LastKnown::read(&path).unwrap_err().to_string();
        assert!(err.contains("unreadable"), "{err}");
    }
}
