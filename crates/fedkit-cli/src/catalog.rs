//! `fedkit list` and `fedkit explain`: every registered name with its documentation, taken from
//! the method's own source file.

use anyhow::{Result, bail};
use fedkit_core::registry::{Entry, module_doc};

struct Item {
    kind: &'static str,
    name: &'static str,
    doc: String,
}

fn items_of<T: ?Sized>(kind: &'static str, entries: &'static [Entry<T>]) -> impl Iterator<Item = Item> {
    entries.iter().map(move |e| Item { kind, name: e.name, doc: e.doc() })
}

fn all() -> Vec<Item> {
    let mut v: Vec<Item> = Vec::new();
    v.extend(items_of("algorithm", fedkit_methods::algorithms()));
    v.extend(items_of("aggregator", fedkit_methods::aggregators()));
    v.extend(items_of("stage", fedkit_methods::stages()));
    v.extend(items_of("local step", fedkit_methods::local_steps()));
    v.extend(items_of("loss", fedkit_methods::losses()));
    v.extend(items_of("model", fedkit_models::models()));
    v.extend(items_of("model compression method", fedkit_methods::model_compression()));
    v.extend(items_of("partitioner", fedkit_data::partitioners()));
    v.extend(fedkit_methods::privacy_attacks().iter().map(|(name, src)| Item {
        kind: "privacy attack",
        name,
        doc: module_doc(src),
    }));
    v.extend(fedkit_methods::analysis::analyses().iter().map(|(name, src)| Item {
        kind: "analysis method",
        name,
        doc: module_doc(src),
    }));
    v.extend(fedkit_data::datasets().iter().map(|(name, src)| Item { kind: "dataset", name, doc: module_doc(src) }));
    v.extend(fedkit_data::transforms().iter().map(|(name, src)| Item {
        kind: "data transform",
        name,
        doc: module_doc(src),
    }));
    v
}

/// One line per registered name, grouped by kind.
pub fn list() -> String {
    let mut out = String::new();
    let mut last = "";
    for it in all() {
        if it.kind != last {
            out.push_str(&format!("{}{}:\n", if last.is_empty() { "" } else { "\n" }, plural(it.kind)));
            last = it.kind;
        }
        let summary = summary(&it.doc);
        out.push_str(&format!("  {:<18} {}\n", it.name, summary));
    }
    out.push_str("\n`fedkit explain NAME` shows one in full.\n");
    out
}

/// One markdown bullet per kind with every registered name: the README's "What exists" block,
/// which a test holds equal to this.
pub fn markdown() -> String {
    let mut out = String::new();
    let items = all();
    let mut kinds: Vec<&str> = items.iter().map(|i| i.kind).collect();
    kinds.dedup();
    for kind in kinds {
        let names: Vec<String> = items.iter().filter(|i| i.kind == kind).map(|i| format!("`{}`", i.name)).collect();
        out.push_str(&format!("- {} ({}): {}\n", plural(kind), names.len(), names.join(", ")));
    }
    out
}

/// `kind` in the plural ("loss" -> "losses").
fn plural(kind: &str) -> String {
    if kind.ends_with('s') { format!("{kind}es") } else { format!("{kind}s") }
}

/// The first sentence of the first paragraph, at most 100 characters.
fn summary(doc: &str) -> String {
    let para: Vec<&str> = doc.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let para = para.join(" ");
    // A sentence ends at ". " unless that full stop closes an abbreviation ("et al.", "e.g.").
    let end = para
        .match_indices(". ")
        .map(|(i, _)| i)
        .find(|&i| !["al", "e.g", "i.e", "vs", "cf"].iter().any(|a| para[..i].ends_with(a)))
        .map(|i| i + 1)
        .unwrap_or(para.len());
    let s = &para[..end];
    if s.chars().count() > 100 { format!("{}...", s.chars().take(97).collect::<String>()) } else { s.to_string() }
}

/// The full documentation of `name`.
pub fn explain(name: &str) -> Result<String> {
    let all = all();
    let hits: Vec<&Item> = all.iter().filter(|i| i.name == name).collect();
    if hits.is_empty() {
        let names: Vec<&str> = all.iter().map(|i| i.name).collect();
        bail!("no method, model, dataset or partitioner called `{name}`; known names: {}", names.join(", "));
    }
    Ok(hits.iter().map(|i| format!("{} `{}`\n\n{}", i.kind, i.name, i.doc)).collect::<Vec<_>>().join("\n"))
}
