//! Loading a folder of definition files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::{ApiSpec, DefinitionError};

/// One API definition that loaded.
#[derive(Debug, Clone)]
pub struct LoadedApi {
    /// The validated definition.
    pub spec: ApiSpec,
    /// The document as written, returned verbatim by the admin API.
    pub raw: serde_json::Value,
    /// The file it came from.
    pub file: PathBuf,
}

/// What a folder scan produced.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Definitions that loaded, in file-name order.
    pub apis: Vec<LoadedApi>,
    /// Files that were skipped, with why.
    pub errors: Vec<DefinitionError>,
}

/// Reads every `*.json` file in `dir`, in file-name order so conflicts resolve the same way on
/// every start. A broken file is reported and skipped; an API whose `api_id`, or whose
/// domain + listen path, is already taken by an earlier active file is rejected.
///
/// # Errors
/// Only when the folder itself cannot be read.
pub fn load_dir(dir: &Path) -> std::io::Result<LoadOutcome> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    files.sort();

    let mut out = LoadOutcome::default();
    let mut ids = HashSet::new();
    let mut routes = HashSet::new();
    for file in files {
        match load_file(&file) {
            Ok((spec, raw)) => {
                if !ids.insert(spec.api_id.clone()) {
                    out.errors.push(
                        DefinitionError::new(
                            "api_id",
                            format!("`{}` is already used by an earlier file", spec.api_id),
                        )
                        .in_file(file),
                    );
                    continue;
                }
                if spec.active && !routes.insert((spec.domain.clone(), spec.listen_path.clone())) {
                    out.errors.push(
                        DefinitionError::new(
                            "proxy.listen_path",
                            format!(
                                "`{}`{} is already served by an earlier file",
                                spec.listen_path,
                                spec.domain
                                    .as_deref()
                                    .map(|d| format!(" on domain `{d}`"))
                                    .unwrap_or_default()
                            ),
                        )
                        .in_file(file),
                    );
                    continue;
                }
                out.apis.push(LoadedApi { spec, raw, file });
            }
            Err(err) => out.errors.push(err.in_file(file)),
        }
    }
    Ok(out)
}

fn load_file(file: &Path) -> Result<(ApiSpec, serde_json::Value), DefinitionError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| DefinitionError::new(".", format!("cannot read: {e}")))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DefinitionError::new(".", format!("invalid JSON: {e}")))?;
    if !raw.is_object() {
        return Err(DefinitionError::new(".", "must be a JSON object"));
    }
    let spec = ApiSpec::from_json(&raw)?;
    Ok((spec, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn api(id: &str, lp: &str) -> String {
        format!(
            r#"{{"api_id": "{id}", "proxy": {{"listen_path": "{lp}", "target_url": "http://127.0.0.1:1"}}}}"#
        )
    }

    #[test]
    fn broken_files_are_reported_and_others_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.json", &api("a", "/a/"));
        write(dir.path(), "b.json", "{ not json");
        write(
            dir.path(),
            "c.json",
            r#"{"api_id": "c", "proxy": {"listen_path": 5}}"#,
        );
        write(dir.path(), "d.txt", "ignored");
        let out = load_dir(dir.path()).unwrap();
        assert_eq!(out.apis.len(), 1);
        assert_eq!(out.errors.len(), 2);
        let msgs: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
        assert!(msgs[0].contains("b.json"), "{msgs:?}");
        assert!(
            msgs[1].contains("c.json") && msgs[1].contains("proxy.listen_path"),
            "{msgs:?}"
        );
    }

    #[test]
    fn duplicates_keep_the_earlier_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "1.json", &api("one", "/same/"));
        write(dir.path(), "2.json", &api("two", "/same/"));
        write(dir.path(), "3.json", &api("one", "/other/"));
        let out = load_dir(dir.path()).unwrap();
        assert_eq!(out.apis.len(), 1);
        assert_eq!(&*out.apis[0].spec.api_id, "one");
        assert_eq!(out.errors.len(), 2);
    }

    #[test]
    fn inactive_apis_do_not_claim_their_path() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1.json",
            r#"{"api_id": "one", "active": false, "proxy": {"listen_path": "/same/", "target_url": "http://h"}}"#,
        );
        write(dir.path(), "2.json", &api("two", "/same/"));
        let out = load_dir(dir.path()).unwrap();
        assert_eq!(out.apis.len(), 2);
        assert!(out.errors.is_empty());
    }
}
