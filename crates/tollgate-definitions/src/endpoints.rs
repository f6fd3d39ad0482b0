//! The rules of the version a not-versioned API serves, compiled at load.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tollgate_rules::endpoints::{
    Action, EndpointLists, EndpointTable, Entry, MatchOptions, Mock, PathPattern,
};
use tollgate_rules::expiry::Expiry;
use tollgate_rules::headers::HeaderOps;
use tollgate_rules::rewrite::{Matcher, Target, Trigger, TriggerOptions, UrlRewrite};
use tollgate_rules::version::VersionRules;

use crate::DefinitionError;
use crate::model::{
    ApiDefinition, EndpointEntry, EndpointMeta, ExtendedPaths, HeaderInjectionMeta, StringRegexMap,
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

/// The per-endpoint rules exist only in `extended_paths`; Tyk drops them with it.
const EXTENDED_ONLY: [&str; 7] = [
    "size_limits",
    "hard_timeouts",
    "mock_response",
    "transform_headers",
    "transform_response_headers",
    "url_rewrites",
    "method_transforms",
];

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
    const BOTH: [&str; 3] = ["white_list", "black_list", "ignored"];
    let only_active: &[&str] = if info.use_extended_paths {
        &[]
    } else {
        &EXTENDED_ONLY
    };
    for list in BOTH.iter().chain(only_active) {
        if raw
            .get(inactive)
            .and_then(|p| p.get(list))
            .is_some_and(is_set)
        {
            let fix = if BOTH.contains(list) {
                format!("move it to `{active}` or remove it")
            } else {
                "set it to true or remove the list".to_owned()
            };
            return Err(DefinitionError::new(
                format!("{base}.{inactive}.{list}"),
                format!(
                    "this list is ignored while `use_extended_paths` is {}: {fix}",
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
    let mut rules = VersionRules {
        name: name.into(),
        endpoints: (!lists.is_empty()).then_some(lists),
        global_size_limit: (info.global_size_limit > 0).then_some(info.global_size_limit),
        expires: Expiry::parse(&format!("{base}.expires"), &info.expires)?,
        global_headers: global(
            "global_headers",
            &info.global_headers,
            "global_headers_remove",
            &info.global_headers_remove,
        )?,
        global_response_headers: global(
            "global_response_headers",
            &info.global_response_headers,
            "global_response_headers_remove",
            &info.global_response_headers_remove,
        )?,
        ..VersionRules::default()
    };
    if info.use_extended_paths {
        endpoint_rules(&mut rules, &base, &info.extended_paths, case, opts)?;
    }
    Ok(rules)
}

/// The longest hard timeout accepted: far beyond any sensible upstream wait, and small
/// enough that adding it to the clock can never overflow.
const MAX_TIMEOUT_SECS: u64 = 366 * 24 * 3600;

/// The per-endpoint rules of `extended_paths`.
fn endpoint_rules(
    rules: &mut VersionRules,
    base: &str,
    ext: &ExtendedPaths,
    case: bool,
    opts: MatchOptions,
) -> Result<(), DefinitionError> {
    rules.size_limits = table(base, "size_limits", &ext.size_limits, case, opts, |_, e| {
        Ok(e.size_limit)
    })?;
    rules.hard_timeouts = table(
        base,
        "hard_timeouts",
        &ext.hard_timeouts,
        case,
        opts,
        |at, e| {
            if e.timeout > MAX_TIMEOUT_SECS {
                return Err(DefinitionError::new(
                    format!("{at}.timeout"),
                    format!(
                        "{} seconds is more than the longest timeout accepted ({MAX_TIMEOUT_SECS})",
                        e.timeout
                    ),
                ));
            }
            Ok(Duration::from_secs(e.timeout))
        },
    )?;
    rules.mock_responses = table(
        base,
        "mock_response",
        &ext.mock_response,
        case,
        opts,
        |at, e| {
            let headers = e.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            Ok(Arc::new(Mock::compile(at, e.code, &e.body, headers)?))
        },
    )?;
    let endpoint_ops = |list: &str, entries: &[HeaderInjectionMeta]| {
        table(base, list, entries, case, opts, |at, e| {
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
    rules.transform_headers = endpoint_ops("transform_headers", &ext.transform_headers)?;
    rules.transform_response_headers = endpoint_ops(
        "transform_response_headers",
        &ext.transform_response_headers,
    )?;
    rules.url_rewrites = table(
        base,
        "url_rewrites",
        &ext.url_rewrites,
        case,
        opts,
        url_rewrite,
    )?;
    rules.method_transforms = table(
        base,
        "method_transforms",
        &ext.method_transforms,
        case,
        opts,
        |at, e| method(&format!("{at}.to_method"), &e.to_method),
    )?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};
    use serde_json::{Value, json};
    use tollgate_rules::endpoints::Candidates;

    use crate::{ApiSpec, DefinitionError};

    const BASE: &str = "version_data.versions.Default";

    fn version(v: Value) -> Result<ApiSpec, DefinitionError> {
        let mut d = json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"},
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}}});
        tollgate_testkit::merge_json(
            &mut d,
            json!({"version_data": {"versions": {"Default": v}}}),
        );
        ApiSpec::from_json(&d)
    }

    fn extended(ext: Value) -> Result<ApiSpec, DefinitionError> {
        version(json!({"use_extended_paths": true, "extended_paths": ext}))
    }

    #[test]
    fn size_limits_compile_with_the_global_one() {
        let s = version(json!({"global_size_limit": 1024})).unwrap();
        assert_eq!(s.version.global_size_limit, Some(1024));
        assert!(s.version.size_limits.is_empty());
        let s = extended(json!({"size_limits": [
            {"path": "/off", "method": "POST", "size_limit": 1, "disabled": true},
            {"path": "/post", "method": "post", "size_limit": 512},
            {"path": "/zero", "method": "PUT", "size_limit": 0}
        ]}))
        .unwrap();
        let v = &s.version;
        assert_eq!(v.global_size_limit, None);
        assert_eq!(
            v.size_limits.find(&Method::POST, &Candidates::of("/post")),
            Some(&512)
        );
        assert_eq!(
            v.size_limits.find(&Method::PUT, &Candidates::of("/post")),
            None
        );
        assert_eq!(
            v.size_limits.find(&Method::POST, &Candidates::of("/off")),
            None
        );
        // Tyk's zero: only an empty body passes.
        assert_eq!(
            v.size_limits.find(&Method::PUT, &Candidates::of("/zero")),
            Some(&0)
        );
    }

    #[test]
    fn hard_timeouts_skip_disabled_and_zero_entries() {
        let s = extended(json!({"hard_timeouts": [
            {"path": "/slow", "method": "GET", "timeout": 0},
            {"path": "/slow", "method": "GET", "timeout": 3, "disabled": true},
            {"path": "/slow", "method": "GET", "timeout": 1},
            {"path": "/long", "method": "GET", "timeout": 120}
        ]}))
        .unwrap();
        let t = &s.version.hard_timeouts;
        assert_eq!(
            t.find(&Method::GET, &Candidates::of("/slow")),
            Some(&Duration::from_secs(1))
        );
        assert_eq!(
            t.find(&Method::GET, &Candidates::of("/long")),
            Some(&Duration::from_secs(120))
        );
        assert_eq!(t.find(&Method::POST, &Candidates::of("/slow")), None);
    }

    #[test]
    fn mocks_compile_with_tyks_defaults() {
        let s = extended(json!({"mock_response": [
            {"path": "/m", "method": "GET", "code": 0, "body": "hi",
                "headers": {"X-Mock": "1", "content-type": "text/plain"}},
            {"path": "/Case", "method": "GET", "code": 418, "body": null, "headers": null,
                "ignore_case": true},
            {"path": "/off", "method": "GET", "code": 500, "disabled": true}
        ]}))
        .unwrap();
        let m = &s.version.mock_responses;
        let mock = m.find(&Method::GET, &Candidates::of("/m")).unwrap();
        assert_eq!(mock.status, StatusCode::OK);
        assert_eq!(&mock.body[..], b"hi");
        let names: Vec<_> = mock
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(names, [("x-mock", "1"), ("content-type", "text/plain")]);
        let mock = m.find(&Method::GET, &Candidates::of("/case")).unwrap();
        assert_eq!(
            (mock.status, mock.body.is_empty()),
            (StatusCode::IM_A_TEAPOT, true)
        );
        assert!(m.find(&Method::GET, &Candidates::of("/off")).is_none());
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let e = |list: &str, entry: Value| {
            extended(json!({list: [entry]})).expect_err(&format!("{list}: must be refused"))
        };
        let cases = [
            (
                e(
                    "hard_timeouts",
                    json!({"path": "/a", "method": "GET", "timeout": -1}),
                ),
                "hard_timeouts[0].timeout",
            ),
            (
                e(
                    "hard_timeouts",
                    json!({"path": "/a", "method": "GET", "timeout": "5"}),
                ),
                "hard_timeouts[0].timeout",
            ),
            (
                e(
                    "hard_timeouts",
                    json!({"path": "/a", "method": "GET", "timeout": 1.5}),
                ),
                "hard_timeouts[0].timeout",
            ),
            (
                e(
                    "hard_timeouts",
                    json!({"path": "/a", "method": "GET", "timeout": 1u64 << 40}),
                ),
                "hard_timeouts[0].timeout",
            ),
            (
                e("hard_timeouts", json!({"path": "/a", "timeout": 5})),
                "hard_timeouts[0].method",
            ),
            (
                e(
                    "size_limits",
                    json!({"path": "/a", "method": "POST", "size_limit": -1}),
                ),
                "size_limits[0].size_limit",
            ),
            (
                e(
                    "size_limits",
                    json!({"path": "/a(", "method": "POST", "size_limit": 1}),
                ),
                "size_limits[0].path",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET", "code": 1000}),
                ),
                "mock_response[0]",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET", "code": 99}),
                ),
                "mock_response[0]",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET", "code": -200}),
                ),
                "mock_response[0].code",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET",
                    "headers": {"bad name": "x"}}),
                ),
                "mock_response[0]",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET", "body": "hi",
                    "headers": {"Content-Length": "10"}}),
                ),
                "mock_response[0]",
            ),
            (
                e(
                    "mock_response",
                    json!({"path": "/a", "method": "GET",
                    "headers": ["x-a"]}),
                ),
                "mock_response[0].headers",
            ),
            (
                e("mock_response", json!({"path": "/a", "method": "G ET"})),
                "mock_response[0].method",
            ),
        ];
        for (err, field) in cases {
            assert_eq!(err.field, format!("{BASE}.extended_paths.{field}"), "{err}");
        }
        let err = version(json!({"global_size_limit": -5})).unwrap_err();
        assert_eq!(err.field, format!("{BASE}.global_size_limit"));
        let err = version(json!({"global_size_limit": "1kb"})).unwrap_err();
        assert_eq!(err.field, format!("{BASE}.global_size_limit"));
    }

    #[test]
    fn extended_rules_without_extended_paths_are_refused() {
        for list in super::EXTENDED_ONLY {
            let err = version(
                json!({"use_extended_paths": false, "extended_paths": {list: [
                {"path": "/a", "method": "POST", "size_limit": 1, "timeout": 1}]}}),
            )
            .unwrap_err();
            assert_eq!(err.field, format!("{BASE}.extended_paths.{list}"), "{err}");
            assert!(err.message.contains("use_extended_paths"), "{err}");
        }
        // The global limit is not an endpoint list: it applies either way.
        let s = version(json!({"use_extended_paths": false, "global_size_limit": 10})).unwrap();
        assert_eq!(s.version.global_size_limit, Some(10));
    }
}
