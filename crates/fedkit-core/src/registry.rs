//! The registry: every method is one file, registered by name, built from its config table, its
//! documentation taken from the file's own `//!` module docs (so `fedkit explain` never drifts from
//! the code).

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The extension point a registered method plugs into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Algorithm,
    Aggregator,
    Stage,
    LocalStep,
    Loss,
    Partitioner,
    Dataset,
    Model,
    Compress,
}

impl Kind {
    /// The config section that selects a method of this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Algorithm => "algorithm",
            Kind::Aggregator => "aggregator",
            Kind::Stage => "pipeline",
            Kind::LocalStep => "local",
            Kind::Loss => "loss",
            Kind::Partitioner => "data.partition",
            Kind::Dataset => "data",
            Kind::Model => "model",
            Kind::Compress => "compress",
        }
    }
}

/// One registered method: how to build it from its config table, and its documentation.
pub struct Entry<T: ?Sized> {
    /// Registry key (= file name), used as `use = "<name>"` in configs.
    pub name: &'static str,
    /// The method's source file (via `include_str!`): its `//!` lines are the documentation.
    pub source: &'static str,
    /// Build from the method's config table (the `use` key already removed), writing the fully
    /// resolved parameters (defaults filled in) into the second table.
    pub build: fn(&toml::Table, &mut toml::Table) -> Result<Box<T>>,
}

impl<T: ?Sized> Entry<T> {
    /// The full module documentation.
    pub fn doc(&self) -> String {
        module_doc(self.source)
    }
    /// The first line of the documentation.
    pub fn summary(&self) -> String {
        self.doc().lines().next().unwrap_or("").to_string()
    }
}

/// The leading `//!` lines of a Rust source file, without the markers.
pub fn module_doc(source: &str) -> String {
    let mut out = String::new();
    for line in source.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("//!") {
            out.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            out.push('\n');
        } else if !t.is_empty() {
            break;
        }
    }
    out
}

/// Find `name` among `entries`, or say which names are allowed.
pub fn lookup<'a, T: ?Sized>(entries: &'a [Entry<T>], kind: Kind, name: &str) -> Result<&'a Entry<T>> {
    entries.iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        Error::config(
            format!("{}.use", kind.section()),
            format!("unknown {kind:?} `{name}`; allowed: {}", names.join(", ")).to_lowercase_first(),
        )
    })
}

trait LowerFirst {
    fn to_lowercase_first(self) -> String;
}
impl LowerFirst for String {
    fn to_lowercase_first(self) -> String {
        let mut c = self.chars();
        match c.next() {
            Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
            None => self,
        }
    }
}

/// Deserialise a method's parameters from its table, with errors naming `section` (the dotted
/// config path) and the field at fault. Structs should use `#[serde(deny_unknown_fields, default)]`.
pub fn params_from<T: DeserializeOwned>(table: &toml::Table, section: &str) -> Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let key = match (path.as_str(), section) {
            ("." | "", _) => section.to_string(),
            (p, "") => p.to_string(),
            (p, s) => format!("{s}.{p}"),
        };
        Error::config(key, e.into_inner().to_string().trim().to_string())
    })
}

/// [`params_from`], also writing the resolved parameters (defaults filled in) into `resolved`.
pub fn params_resolved<T: DeserializeOwned + serde::Serialize>(
    table: &toml::Table,
    section: &str,
    resolved: &mut toml::Table,
) -> Result<T> {
    let v: T = params_from(table, section)?;
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(&v) {
        resolved.extend(t);
    }
    Ok(v)
}

/// Build a registered method of `kind` from a table holding `use = "<name>"` plus its parameters.
/// `extra_keys` are removed before the method sees the table (e.g. a stage's `on`).
pub fn build_from_table<T: ?Sized>(
    entries: &[Entry<T>],
    kind: Kind,
    section: &str,
    table: &toml::Table,
    extra_keys: &[&str],
) -> Result<(Box<T>, toml::Table)> {
    let name = match table.get("use") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::config(
                format!("{section}.use"),
                format!("expected a method name (string), found {}", other.type_str()),
            ));
        }
        None => {
            let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
            return Err(Error::config(format!("{section}.use"), format!("missing; allowed: {}", names.join(", "))));
        }
    };
    let entry = lookup(entries, kind, &name).map_err(|e| match e {
        Error::Config { file, msg, .. } => Error::Config { file, key: format!("{section}.use"), msg },
        other => other,
    })?;
    let mut params = table.clone();
    params.remove("use");
    for k in extra_keys {
        params.remove(*k);
    }
    let mut resolved = toml::Table::new();
    resolved.insert("use".into(), toml::Value::String(name.clone()));
    for k in extra_keys {
        if let Some(v) = table.get(*k) {
            resolved.insert(k.to_string(), v.clone());
        }
    }
    let built = (entry.build)(&params, &mut resolved).map_err(|e| match e {
        // Methods name keys relative to their table ("mu"); a few name them absolutely.
        Error::Config { file, key, msg } if !key.starts_with(section) => {
            let key = if key.is_empty() { section.to_string() } else { format!("{section}.{key}") };
            Error::Config { file, key, msg }
        }
        other => other,
    })?;
    Ok((built, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_doc_takes_leading_lines_only() {
        let src = "//! First line.\n//!\n//! More.\n\nuse x;\n//! not this\n";
        assert_eq!(module_doc(src), "First line.\n\nMore.\n");
    }
}
