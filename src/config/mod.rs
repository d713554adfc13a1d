//! Configuration: the schema of SPEC §2, loading from YAML, JSON or TOML (chosen by file
//! extension, one serde schema), validation that reports every error at once with its key path
//! and line, and the diff naming restart-required keys that changed.
//!
//! Loading runs in stages: the text is parsed into a format-neutral [`node::Node`] tree that keeps
//! lines; the typed schema is deserialized from it by [`de::deserialize_all`], which keeps going
//! past errors; [`validate::validate`] then checks meaning (addresses, references, placeholders,
//! keys whose feature is not built yet).

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod cidr;
pub mod de;
pub mod diff;
pub mod fuzzing;
pub mod node;
pub mod routes;
pub mod schema;
pub mod units;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use diff::{RestartChange, restart_required_changes};
pub use schema::*;
pub use units::{ByteSize, Duration};
pub use validate::TOKEN_PLACEHOLDER;

use node::{Node, Seg, path_string};

/// A configuration file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Toml,
}

impl Format {
    /// The format a file name's extension names.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// One problem in a configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `upstreams[1].pool.idle_timeout`; `(document)` for the whole file.
    pub key: String,
    /// 1-based line in the source, when the format gives one.
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one configuration source (a file or a ConfigMap key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the text came from: a file path, or e.g. `configmap arc-gateway/arc-gateway-config`.
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}: {}", self.origin, line, p.key, p.message)?,
                None => write!(f, "{}: {}: {}", self.origin, p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn single(origin: &str, key: &str, line: Option<usize>, message: String) -> Self {
        ConfigError {
            origin: origin.to_string(),
            problems: vec![Problem {
                key: key.to_string(),
                line,
                message,
            }],
        }
    }
}

/// Reads and validates a configuration file; the format comes from its extension.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let format = Format::from_path(path).ok_or_else(|| {
        ConfigError::single(
            &origin,
            "(document)",
            None,
            "unknown configuration format: the file name must end in .yaml, .yml, .json or .toml"
                .into(),
        )
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            &origin,
            "(document)",
            None,
            format!("cannot read the file: {e}"),
        )
    })?;
    parse_str(&text, format, &origin)
}

/// Parses and validates configuration text. `origin` names the source in error messages.
pub fn parse_str(text: &str, format: Format, origin: &str) -> Result<Config, ConfigError> {
    let root = match format {
        Format::Yaml => node::parse_yaml(text),
        Format::Json => node::parse_json(text),
        Format::Toml => node::parse_toml(text),
    }
    .map_err(|e| {
        ConfigError::single(
            origin,
            "(document)",
            e.line,
            format!("syntax error: {}", e.message),
        )
    })?;
    // An empty YAML document means "all defaults".
    let root = match root.kind {
        node::Kind::Null => Node {
            kind: node::Kind::Map(Vec::new()),
            line: root.line,
        },
        _ => root,
    };

    let mut problems: Vec<(Vec<Seg>, String)> = Vec::new();

    // A placeholder token anywhere is refused: it means a manifest was applied unedited.
    root.walk_strings(&mut Vec::new(), &mut |path, value| {
        if value.contains(TOKEN_PLACEHOLDER) {
            problems.push((
                path.to_vec(),
                format!("the placeholder `{TOKEN_PLACEHOLDER}` must be replaced by a real value"),
            ));
        }
    });

    let outcome = de::deserialize_all::<Config>(&root);
    problems.extend(outcome.errors);
    if let Some(cfg) = &outcome.value {
        let seq_intact = !outcome
            .skipped
            .iter()
            .any(|p| p.iter().any(|s| matches!(s, Seg::Index(_))));
        for issue in validate::validate(cfg, seq_intact) {
            problems.push((issue.path, issue.message));
        }
        if seq_intact && problems.is_empty() {
            // What only compiling the table finds: invalid regexes, conflicting routes.
            let compiled = crate::routing::compile(&routes::route_model(cfg), 0);
            for p in compiled.problems {
                let index = p
                    .name
                    .strip_prefix("routes[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<usize>().ok());
                let mut path = vec![Seg::Key("routes".into())];
                if let Some(i) = index {
                    path.push(Seg::Index(i));
                    path.push(Seg::Key("path".into()));
                }
                problems.push((path, p.to_string()));
            }
        }
    }

    if problems.is_empty()
        && let Some(cfg) = outcome.value
    {
        return Ok(cfg);
    }
    problems.sort_by_key(|(path, _)| root.line_of(path).unwrap_or(usize::MAX));
    let problems = problems
        .into_iter()
        .map(|(path, message)| Problem {
            key: path_string(&path),
            line: root.line_of(&path),
            message,
        })
        .collect();
    Err(ConfigError {
        origin: origin.to_string(),
        problems,
    })
}

/// Checks that the files a configuration references (TLS certificates and keys) exist and are
/// readable. Kept apart from [`parse_str`] so that parsing stays free of file-system access.
pub fn check_referenced_files(cfg: &Config, base: &Path) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut check = |key: String, file: &str| {
        let path = base.join(file);
        if let Err(e) = std::fs::File::open(&path) {
            out.push(Problem {
                key,
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    for (i, c) in cfg.tls.certificates.iter().enumerate() {
        check(format!("tls.certificates[{i}].cert"), &c.cert);
        check(format!("tls.certificates[{i}].key"), &c.key);
    }
    if let Some(d) = &cfg.tls.default_certificate {
        check("tls.default_certificate.cert".into(), &d.cert);
        check("tls.default_certificate.key".into(), &d.key);
    }
    for (i, u) in cfg.upstreams.iter().enumerate() {
        if let Some(ca) = u
            .tls
            .as_ref()
            .filter(|t| t.enabled)
            .and_then(|t| t.ca.as_ref())
        {
            check(format!("upstreams[{i}].tls.ca"), ca);
        }
    }
    out
}

#[cfg(test)]
mod tests;
