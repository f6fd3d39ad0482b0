//! The rules of the version a not-versioned API serves, compiled at load.

use std::sync::Arc;

use http::Method;
use serde_json::Value;
use tollgate_rules::endpoints::{
    Action, EndpointLists, EndpointTable, Entry, MatchOptions, Mock, PathPattern,
};
use tollgate_rules::headers::HeaderOps;
use tollgate_rules::version::VersionRules;

use crate::DefinitionError;
use crate::model::{ApiDefinition, EndpointEntry, EndpointMeta, HeaderInjectionMeta, VersionInfo};
use crate::unsupported::is_set;

/// The version a not-versioned API serves: the only one, else the one named `Default`,
/// `default` or `""`. Tyk answers 403 per request when that is ambiguous or missing; a
/// definition that can never serve a request is refused here instead, with the reason.
pub(crate) fn served_version(
    def: &ApiDefinition,
) -> Result<Option<(&str, &Value)>, DefinitionError> {
    let versions = &def.version_data.versions;
    if versions.len() <= 1 {
        return Ok(versions.iter().next().map(|(k, v)| (k.as_str(), v)));
    }
    let mut defaults = versions
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "Default" | "default" | ""));
    match (defaults.next(), defaults.next()) {
        (Some((k, v)), None) => Ok(Some((k.as_str(), v))),
        (Some(_), Some(_)) => Err(DefinitionError::new(
            "version_data.versions",
            "Ambiguous default API version for this non-versioned API",
        )),
        (None, _) => Err(DefinitionError::new(
            "version_data.versions",
            "No default API version for this non-versioned API found",
        )),
    }
}

/// The rules of version `name`.
pub(crate) fn compile(
    name: &str,
    raw: &Value,
    opts: MatchOptions,
) -> Result<VersionRules, DefinitionError> {
    let base = format!("version_data.versions.{name}");
    let info: VersionInfo = serde_path_to_error::deserialize(raw).map_err(|err| {
        DefinitionError::new(
            format!("{base}.{}", err.path()),
            err.into_inner().to_string(),
        )
    })?;
    // Tyk reads one set and ignores the other; a list it would ignore is refused rather than
    // guessed at (dropping a black-list opens its endpoints).
    let (active, inactive) = if info.use_extended_paths {
        ("extended_paths", "paths")
    } else {
        ("paths", "extended_paths")
    };
    for list in ["white_list", "black_list", "ignored"] {
        if raw
            .get(inactive)
            .and_then(|p| p.get(list))
            .is_some_and(is_set)
        {
            return Err(DefinitionError::new(
                format!("{base}.{inactive}.{list}"),
                format!(
                    "this list is ignored while `use_extended_paths` is {}: move it to \
                     `{active}` or remove it",
                    info.use_extended_paths
                ),
            ));
        }
    }
    let case = info.ignore_endpoint_case;
    let mut lists = EndpointLists::default();
    if info.use_extended_paths {
        let ext = &info.extended_paths;
        let field = |list: &str, i: usize| format!("{base}.extended_paths.{list}[{i}]");
        lists.black = extended(&ext.black_list, |i| field("black_list", i), true, opts)?;
        lists.ignored = extended(&ext.ignored, |i| field("ignored", i), case, opts)?;
        lists.white = extended(&ext.white_list, |i| field("white_list", i), case, opts)?;
    } else {
        let p = &info.paths;
        let field = |list: &str, i: usize| format!("{base}.paths.{list}[{i}]");
        lists.black = simple(&p.black_list, |i| field("black_list", i), true, opts)?;
        lists.ignored = simple(&p.ignored, |i| field("ignored", i), case, opts)?;
        lists.white = simple(&p.white_list, |i| field("white_list", i), case, opts)?;
    }
    let ext = &info.extended_paths;
    let global = |set_key: &str,
                  set: &std::collections::BTreeMap<String, String>,
                  remove_key: &str,
                  remove: &[String]| {
        let ops = HeaderOps::compile(
            &base,
            (remove_key, remove.iter().map(String::as_str)),
            (set_key, set.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )?;
        Ok::<_, DefinitionError>((!ops.is_empty()).then_some(ops))
    };
    let endpoint_ops = |list: &str, entries: &[HeaderInjectionMeta]| {
        table(&base, list, entries, case, opts, |at, e| {
            Ok(HeaderOps::compile(
                at,
                (
                    "delete_headers",
                    e.delete_headers.iter().map(String::as_str),
                ),
                (
                    "add_headers",
                    e.add_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
            )?)
        })
    };
    Ok(VersionRules {
        name: name.into(),
        endpoints: (!lists.is_empty()).then_some(lists),
        global_headers: global(
            "global_headers",
            &info.global_headers,
            "global_headers_remove",
            &info.global_headers_remove,
        )?,
        transform_headers: endpoint_ops("transform_headers", &ext.transform_headers)?,
        global_response_headers: global(
            "global_response_headers",
            &info.global_response_headers,
            "global_response_headers_remove",
            &info.global_response_headers_remove,
        )?,
        transform_response_headers: endpoint_ops(
            "transform_response_headers",
            &ext.transform_response_headers,
        )?,
    })
}

fn simple(
    paths: &[String],
    field: impl Fn(usize) -> String,
    ignore_case: bool,
    opts: MatchOptions,
) -> Result<Vec<Entry>, DefinitionError> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pattern = PathPattern::compile(&field(i), p, ignore_case, opts)?;
            Ok(Entry::new(pattern, None))
        })
        .collect()
}

fn extended(
    entries: &[EndpointMeta],
    field: impl Fn(usize) -> String,
    ignore_case: bool,
    opts: MatchOptions,
) -> Result<Vec<Entry>, DefinitionError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.disabled {
            continue;
        }
        let at = field(i);
        let pattern = PathPattern::compile(
            &format!("{at}.path"),
            &e.path,
            ignore_case || e.ignore_case,
            opts,
        )?;
        let mut methods = Vec::new();
        if e.method_actions.is_empty() {
            if e.method.trim().is_empty() {
                return Err(DefinitionError::new(
                    format!("{at}.method"),
                    "an entry needs `method` or `method_actions`",
                ));
            }
            methods.push((method(&format!("{at}.method"), &e.method)?, Action::Listed));
        }
        for (name, action) in &e.method_actions {
            let f = format!("{at}.method_actions.{name}");
            let m = method(&f, name)?;
            let a = match action.action.as_str() {
                "" | "no_action" => Action::Listed,
                "reply" => Action::Reply(Arc::new(Mock::compile(
                    &f,
                    action.code,
                    &action.data,
                    action.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )?)),
                other => {
                    return Err(DefinitionError::new(
                        format!("{f}.action"),
                        format!("unknown action `{other}` (expected `no_action` or `reply`)"),
                    ));
                }
            };
            methods.push((m, a));
        }
        out.push(Entry::new(pattern, Some(methods)));
    }
    Ok(out)
}

fn method(field: &str, name: &str) -> Result<Method, DefinitionError> {
    Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| DefinitionError::new(field, format!("`{name}` is not an HTTP method")))
}

/// A per-endpoint list of version `base` (`{base}.extended_paths.{list}`) as a table: each
/// enabled entry's pattern and method, and the value `value` makes of it (given the entry's
/// field path for errors).
pub(crate) fn table<E: EndpointEntry, T>(
    base: &str,
    list: &str,
    entries: &[E],
    ignore_case: bool,
    opts: MatchOptions,
    mut value: impl FnMut(&str, &E) -> Result<T, DefinitionError>,
) -> Result<EndpointTable<T>, DefinitionError> {
    let mut table = EndpointTable::default();
    for (i, e) in entries.iter().enumerate() {
        if e.disabled() {
            continue;
        }
        let at = format!("{base}.extended_paths.{list}[{i}]");
        let pattern = PathPattern::compile(
            &format!("{at}.path"),
            e.path(),
            ignore_case || e.ignore_case(),
            opts,
        )?;
        if e.method().trim().is_empty() {
            return Err(DefinitionError::new(
                format!("{at}.method"),
                "an entry needs the `method` it applies to",
            ));
        }
        let m = method(&format!("{at}.method"), e.method())?;
        table.push(pattern, m, value(&at, e)?);
    }
    Ok(table)
}
