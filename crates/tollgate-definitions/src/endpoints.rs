//! The rules of the version a not-versioned API serves, compiled at load.

use std::sync::Arc;

use http::Method;
use serde_json::Value;
use tollgate_rules::endpoints::{
    Action, EndpointLists, EndpointTable, Entry, MatchOptions, Mock, PathPattern,
};
use tollgate_rules::headers::HeaderOps;
use tollgate_rules::rewrite::{Matcher, Target, Trigger, TriggerOptions, UrlRewrite};
use tollgate_rules::version::VersionRules;

use crate::DefinitionError;
use crate::model::{
    ApiDefinition, EndpointEntry, EndpointMeta, HeaderInjectionMeta, StringRegexMap,
    UrlRewriteMeta, VersionInfo,
};
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
        url_rewrites: table(
            &base,
            "url_rewrites",
            &ext.url_rewrites,
            case,
            opts,
            url_rewrite,
        )?,
        method_transforms: table(
            &base,
            "method_transforms",
            &ext.method_transforms,
            case,
            opts,
            |at, e| method(&format!("{at}.to_method"), &e.to_method),
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

fn url_rewrite(at: &str, e: &UrlRewriteMeta) -> Result<UrlRewrite, DefinitionError> {
    let mut triggers = Vec::with_capacity(e.triggers.len());
    for (n, t) in e.triggers.iter().enumerate() {
        let tf = format!("{at}.triggers[{n}]");
        let any = match t.on.trim() {
            "any" => true,
            "all" | "" => false,
            other => {
                return Err(DefinitionError::new(
                    format!("{tf}.on"),
                    format!("`{other}` is not `any` or `all`"),
                ));
            }
        };
        let o = &t.options;
        if !o.payload_matches.match_rx.is_empty() {
            return Err(DefinitionError::new(
                format!("{tf}.options.payload_matches"),
                "body triggers are not supported yet",
            ));
        }
        let of = format!("{tf}.options");
        let tests = |kind: &str, map: &std::collections::BTreeMap<String, StringRegexMap>| {
            map.iter()
                .map(|(name, m)| {
                    let f = format!("{of}.{kind}.{name}");
                    Ok((name.clone(), Matcher::compile(&f, &m.match_rx, m.reverse)?))
                })
                .collect::<Result<Vec<_>, DefinitionError>>()
        };
        let headers = tests("header_matches", &o.header_matches)?
            .into_iter()
            .map(|(name, m)| {
                let n = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    DefinitionError::new(
                        format!("{of}.header_matches.{name}"),
                        format!("`{name}` is not a valid header name"),
                    )
                })?;
                Ok((n, m))
            })
            .collect::<Result<_, DefinitionError>>()?;
        let options = TriggerOptions {
            headers,
            query: tests("query_val_matches", &o.query_val_matches)?,
            path_parts: tests("path_part_matches", &o.path_part_matches)?,
            session_meta: tests("session_meta_matches", &o.session_meta_matches)?,
            context: tests("request_context_matches", &o.request_context_matches)?,
        };
        triggers.push(Trigger {
            any,
            options,
            rewrite_to: Target::compile(&format!("{tf}.rewrite_to"), &t.rewrite_to)?,
        });
    }
    let target = Target::compile(&format!("{at}.rewrite_to"), &e.rewrite_to)?;
    Ok(UrlRewrite::compile(at, &e.match_pattern, target, triggers)?)
}
