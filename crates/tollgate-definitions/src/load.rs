//! Loading API definitions from a folder of files or from database rows.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use tollgate_rules::endpoints::MatchOptions;

use crate::{ApiSpec, DefinitionError};

/// Where a definition lives, so admin writes go back to the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// A file in `app_path`.
    File(PathBuf),
    /// A row of the definitions table, by `api_id`.
    Database(String),
}

impl fmt::Display for ApiSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Database(id) => write!(f, "database row `{id}`"),
        }
    }
}

/// One API definition that loaded.
#[derive(Debug, Clone)]
pub struct LoadedApi {
    /// The validated definition.
    pub spec: ApiSpec,
    /// The document as written, returned verbatim by the admin API.
    pub raw: serde_json::Value,
    /// Where it came from.
    pub source: ApiSource,
}

/// The gateway-wide settings every definition is compiled with.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// How endpoint patterns match (`enable_path_prefix_matching`, ...).
    pub matching: MatchOptions,
    /// The gateway's upstream TLS settings (`proxy_ssl_*`), under each API's own
    /// `proxy.transport`.
    pub upstream_tls: tollgate_tls::ClientSettings,
}

/// What a scan produced.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Definitions that loaded, in source order.
    pub apis: Vec<LoadedApi>,
    /// Definitions that were skipped, with why.
    pub errors: Vec<DefinitionError>,
}

/// Reads every `*.json` file in `dir`, in file-name order so conflicts resolve the same way on
/// every start. A broken file is reported and skipped; an API whose `api_id`, or whose
/// domain + listen path, is already taken by an earlier active one is rejected.
///
/// # Errors
/// Only when the folder itself cannot be read.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> std::io::Result<LoadOutcome> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    files.sort();
    Ok(collect(files.into_iter().map(|file| {
        let parsed = read_file(&file, opts);
        (ApiSource::File(file), parsed)
    })))
}

/// Validates database rows `(api_id, definition)` with the same rules as files, in the order
/// given (callers sort by `api_id`).
pub fn load_rows(rows: Vec<(String, serde_json::Value)>, opts: &LoadOptions) -> LoadOutcome {
    collect(rows.into_iter().map(|(id, raw)| {
        let parsed = parse(raw, opts);
        (ApiSource::Database(id), parsed)
    }))
}

fn collect(
    items: impl Iterator<
        Item = (
            ApiSource,
            Result<(ApiSpec, serde_json::Value), DefinitionError>,
        ),
    >,
) -> LoadOutcome {
    let mut out = LoadOutcome::default();
    let mut ids = HashSet::new();
    let mut routes = HashSet::new();
    for (source, parsed) in items {
        let (spec, raw) = match parsed {
            Ok(ok) => ok,
            Err(err) => {
                out.errors.push(err.at(&source));
                continue;
            }
        };
        if !ids.insert(spec.api_id.clone()) {
            out.errors.push(
                DefinitionError::new(
                    "api_id",
                    format!("`{}` is already used by an earlier definition", spec.api_id),
                )
                .at(&source),
            );
            continue;
        }
        if spec.active && !routes.insert((spec.domain.clone(), spec.listen_path.clone())) {
            let domain = spec
                .domain
                .as_deref()
                .map(|d| format!(" on domain `{d}`"))
                .unwrap_or_default();
            out.errors.push(
                DefinitionError::new(
                    "proxy.listen_path",
                    format!(
                        "`{}`{domain} is already served by an earlier definition",
                        spec.listen_path
                    ),
                )
                .at(&source),
            );
            continue;
        }
        out.apis.push(LoadedApi { spec, raw, source });
    }
    out
}

fn read_file(
    file: &Path,
    opts: &LoadOptions,
) -> Result<(ApiSpec, serde_json::Value), DefinitionError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| DefinitionError::new(".", format!("cannot read: {e}")))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DefinitionError::new(".", format!("invalid JSON: {e}")))?;
    parse(raw, opts)
}

fn parse(
    raw: serde_json::Value,
    opts: &LoadOptions,
) -> Result<(ApiSpec, serde_json::Value), DefinitionError> {
    if !raw.is_object() {
        return Err(DefinitionError::new(".", "must be a JSON object"));
    }
    let spec = ApiSpec::from_json_with(&raw, opts)?;
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
        let out = load_dir(dir.path(), &LoadOptions::default()).unwrap();
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
        let out = load_dir(dir.path(), &LoadOptions::default()).unwrap();
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
        let out = load_dir(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(out.apis.len(), 2);
        assert!(out.errors.is_empty());
    }
}
