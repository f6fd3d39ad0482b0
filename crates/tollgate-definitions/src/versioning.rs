//! Versioned APIs (`version_data.not_versioned: false`): where a request names its version
//! (`definition.location` and `key`), which version serves a request that names none or an
//! unknown one, and each version's rules and upstream.
//!
//! Tyk treats a definition without `not_versioned` as versioned; Tollgate does so only when
//! the definition gives versions to choose from (a `default_version`, or more than one
//! version), so a minimal hand-written definition keeps serving its single version.

use std::sync::Arc;

use http::HeaderName;
use tollgate_rules::endpoints::MatchOptions;
use tollgate_rules::version::VersionRules;

use crate::model::{ApiDefinition, VersionDefinition};
use crate::spec::parse_target_at;
use crate::{DefinitionError, Target};

/// Where the version is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionLocation {
    /// A request header (`definition.key`, default `x-api-version`).
    Header(HeaderName),
    /// A query parameter (`definition.key`).
    Param(Box<str>),
    /// The first path segment after the listen path.
    Url,
}

/// The version a request that names none (or, with `fallback_to_default`, an unknown one)
/// gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultVersion {
    /// `default_version` is empty: 403 `Version information not found`.
    Unset,
    /// `default_version` names no version: 403 `This API version does not seem to exist`.
    Missing,
    /// The index in [`Versioning::versions`].
    Index(usize),
}

/// One version of a versioned API.
#[derive(Debug, Clone)]
pub struct ApiVersion {
    /// Its rules (its name among them).
    pub rules: Arc<VersionRules>,
    /// `override_target`, when set.
    pub target: Option<Target>,
}

/// How a versioned API picks a version.
#[derive(Debug, Clone)]
pub struct Versioning {
    /// Where the version is read.
    pub location: VersionLocation,
    /// Remove it from the request before the rules and the upstream see it
    /// (`strip_versioning_data`, or the older `strip_path`).
    pub strip: bool,
    /// An unknown version gets the default one (`fallback_to_default`).
    pub fallback_to_default: bool,
    /// `default_version`.
    pub default: DefaultVersion,
    /// Every version, in name order.
    pub versions: Box<[ApiVersion]>,
}

impl Versioning {
    /// The index of the version called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| &*v.rules.name == name)
    }
}

/// True when requests choose a version (see the module docs).
pub(crate) fn is_versioned(def: &ApiDefinition) -> bool {
    let vd = &def.version_data;
    match vd.not_versioned {
        Some(not) => !not,
        None => !vd.default_version.trim().is_empty() || vd.versions.len() > 1,
    }
}

/// A version's `override_target`, when set.
pub(crate) fn override_target(
    name: &str,
    raw: &serde_json::Value,
) -> Result<Option<Target>, DefinitionError> {
    match raw.get("override_target") {
        Some(serde_json::Value::String(url)) if !url.trim().is_empty() => {
            Ok(Some(parse_target_at(
                &format!("version_data.versions.{name}.override_target"),
                url,
            )?))
        }
        _ => Ok(None),
    }
}

/// The versioning of a versioned definition.
///
/// # Errors
/// An unknown `definition.location`, a `url-param` location without a key, a bad header name,
/// `url_versioning_pattern` (not supported yet), or a bad rule in any version.
pub(crate) fn compile(
    def: &ApiDefinition,
    opts: MatchOptions,
) -> Result<Versioning, DefinitionError> {
    let vdef: VersionDefinition = if def.definition.is_null() {
        VersionDefinition::default()
    } else {
        serde_path_to_error::deserialize(&def.definition).map_err(|err| {
            DefinitionError::new(
                format!("definition.{}", err.path()),
                err.into_inner().to_string(),
            )
        })?
    };
    if !vdef.url_versioning_pattern.trim().is_empty() {
        return Err(DefinitionError::new(
            "definition.url_versioning_pattern",
            "url_versioning_pattern is not supported yet",
        ));
    }
    let key = vdef.key.trim();
    let location = match vdef.location.trim() {
        "" | "header" => {
            let name = if key.is_empty() { "x-api-version" } else { key };
            VersionLocation::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                DefinitionError::new("definition.key", format!("`{name}` is not a header name"))
            })?)
        }
        "url-param" => {
            if key.is_empty() {
                return Err(DefinitionError::new(
                    "definition.key",
                    "url-param versioning needs the query parameter's name",
                ));
            }
            VersionLocation::Param(key.into())
        }
        "url" => VersionLocation::Url,
        other => {
            return Err(DefinitionError::new(
                "definition.location",
                format!("`{other}` is not `header`, `url-param` or `url`"),
            ));
        }
    };
    let vd = &def.version_data;
    let mut versions = Vec::with_capacity(vd.versions.len());
    for (name, raw) in &vd.versions {
        versions.push(ApiVersion {
            rules: Arc::new(crate::endpoints::compile(name, raw, opts)?),
            target: override_target(name, raw)?,
        });
    }
    if versions.is_empty() {
        return Err(DefinitionError::new(
            "version_data.versions",
            "a versioned API needs at least one version",
        ));
    }
    let mut versioning = Versioning {
        location,
        strip: vdef.strip_versioning_data || vdef.strip_path,
        fallback_to_default: vd.fallback_to_default || vdef.fallback_to_default,
        default: DefaultVersion::Unset,
        versions: versions.into_boxed_slice(),
    };
    let default = vd.default_version.trim();
    if !default.is_empty() {
        versioning.default = versioning
            .find(default)
            .map_or(DefaultVersion::Missing, DefaultVersion::Index);
    }
    Ok(versioning)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::ApiSpec;

    fn spec(extra: Value) -> Result<ApiSpec, DefinitionError> {
        let mut d = json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"},
            "version_data": {"not_versioned": false, "default_version": "v1", "versions": {
                "v1": {"name": "v1"}, "v2": {"name": "v2", "override_target": "http://other:81/x"}}}});
        tollgate_testkit::merge_json(&mut d, extra);
        ApiSpec::from_json(&d)
    }

    #[test]
    fn locations_defaults_and_targets() {
        let s = spec(json!({})).unwrap();
        let v = s.versioning.as_deref().unwrap();
        assert_eq!(
            v.location,
            VersionLocation::Header(HeaderName::from_static("x-api-version"))
        );
        assert_eq!(v.default, DefaultVersion::Index(0));
        assert!(!v.strip && !v.fallback_to_default);
        let v2 = s.for_version(v.find("v2").unwrap()).unwrap();
        assert_eq!(v2.target.authority.as_str(), "other:81");
        assert_eq!(&*v2.version.name, "v2");
        assert_eq!(s.for_version(0).unwrap().target.authority.as_str(), "up:80");

        let s = spec(
            json!({"definition": {"location": "url-param", "key": "ver", "strip_path": true},
            "version_data": {"default_version": "v7"}}),
        )
        .unwrap();
        let v = s.versioning.as_deref().unwrap();
        assert_eq!(v.location, VersionLocation::Param("ver".into()));
        assert!(v.strip);
        assert_eq!(v.default, DefaultVersion::Missing);
    }

    #[test]
    fn bad_versioning_names_the_field() {
        for (extra, field) in [
            (
                json!({"definition": {"location": "path"}}),
                "definition.location",
            ),
            (
                json!({"definition": {"location": "url-param"}}),
                "definition.key",
            ),
            (json!({"definition": {"key": "bad key"}}), "definition.key"),
            (
                json!({"definition": {"location": 3}}),
                "definition.location",
            ),
            (
                json!({"version_data": {"versions": {"v2": {"override_target": "ftp://x"}}}}),
                "version_data.versions.v2.override_target",
            ),
            (
                json!({"version_data": {"versions": {"v1": {"expires": "soon"}}}}),
                "version_data.versions.v1.expires",
            ),
        ] {
            let err = spec(extra.clone()).expect_err(&format!("{extra}"));
            assert_eq!(err.field, field, "{extra}: {err}");
        }
        // Not versioned without a choice to make: the single version is served.
        let d = json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"},
            "version_data": {"versions": {"only": {"name": "only"}}}});
        assert!(ApiSpec::from_json(&d).unwrap().versioning.is_none());
    }
}
