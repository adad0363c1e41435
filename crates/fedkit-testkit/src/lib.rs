//! fedkit testkit: toy fixtures and the conformance suites of DESIGN.md section 8, which every
//! registered method must pass.
//!
//! - [`aggregators::check_aggregator`]: permutation invariance (same bits for any input order),
//!   identical updates return that update, `accepted` lists only clients of the cohort that sent
//!   an update; [`aggregators::check_weighted_mean`] for aggregators that promise the weighted mean.
//! - [`stages::check_stage`]: every hook is deterministic per seed, and a stage's per-client memory
//!   survives an encode-decode round trip (fedkit_core::codec) (continuing from the restored memory gives the same bits).
//! - [`algorithms::check_algorithm`]: client and server state survive an encode-decode round trip (fedkit_core::codec) (the
//!   next round from restored state gives the same bits), and 1 client x 1 local step is plain SGD
//!   (optionally: the default server rule moves the global model by exactly the aggregate).
//! - [`check_registry`]: unique snake_case names, and documentation that names a paper or source,
//!   describes every parameter and has a TOML example that builds.
//!
//! This crate's `tests/registry.rs` runs every suite over every entry of `fedkit_methods`'
//! registries, built with default parameters, so a new method is checked as soon as it is
//! registered; nothing needs adding. Only an algorithm that replaces the server rule
//! `w += aggregated delta` (FedOpt, ...) goes into that file's `CUSTOM_SERVER_RULE` list.
//!
//! To check a method with other parameters, add `fedkit-testkit` as a dev-dependency and call a
//! suite with a constructor; a suite panics with a message naming the method and the property:
//!
//! ```
//! use fedkit_methods::aggregators::mean::Mean;
//! use fedkit_testkit::aggregators::check_aggregator;
//!
//! check_aggregator("mean(weighted = false)", &|| Box::new(Mean { weighted: false }), true);
//! ```
//!
//! Fixtures are tiny and fixed: updates over a one-entry layout ([`toy_layout`], [`toy_update`],
//! [`toy_cohort`]), a 40-sample, 5-feature, 3-class data set with class-dependent means
//! ([`toy_data`], [`toy_clients`]) and the registry's `logreg` model ([`logreg`]).

pub mod aggregators;
pub mod algorithms;
pub mod stages;

use std::fmt::Debug;
use std::sync::Arc;

use fedkit_core::registry::{Entry, Kind, build_from_table};
use fedkit_core::{
    ClientCtx, ClientData, ClientId, Dataset, Extras, Layout, LocalTrain, Metrics, Model, ParamKind, Params, RngStream,
    RoundCtx, Update,
};
use serde::Serialize;

/// The run seed of every fixture context.
pub const SEED: u64 = 42;
/// Clients in the toy federation (every client id used here is below it).
pub const POPULATION: usize = 40;
/// The toy round's cohort. Its last client sends no update (it failed), so an aggregator must not
/// accept it.
pub const COHORT: [ClientId; 9] = [3, 7, 11, 12, 20, 25, 31, 33, 38];
/// Samples, features and classes of [`toy_data`].
pub const SAMPLES: usize = 40;
pub const FEATURES: usize = 5;
pub const CLASSES: usize = 3;

/// A layout of one weight entry `w` of `n` values.
pub fn toy_layout(n: usize) -> Arc<Layout> {
    let mut l = Layout::new();
    l.push("w", &[n], ParamKind::Weight);
    Arc::new(l)
}

/// An update of `client` with delta `values` (in [`toy_layout`]) and aggregation weight `weight`.
pub fn toy_update(client: ClientId, values: Vec<f32>, weight: f32) -> Update {
    let delta = Params::from_vec(toy_layout(values.len()), values).expect("values fit their own layout");
    Update { client, delta, weight, extras: Extras::default(), metrics: Metrics::new() }
}

/// `n` values drawn from N(0, 3^2), a fixed function of `(a, b)`.
pub fn toy_values(n: usize, a: u64, b: u64) -> Vec<f32> {
    let mut rng = RngStream::derive(SEED, "testkit.values", a, b);
    (0..n).map(|_| rng.gaussian(0.0, 3.0) as f32).collect()
}

/// One update per client of `ids` for `round`: `n` distinct values each, weights in 1..=13.
pub fn toy_cohort(round: u32, ids: &[ClientId], n: usize) -> Vec<Update> {
    let weight = |c: ClientId| (1 + (7 * c + round) % 13) as f32;
    ids.iter().map(|&c| toy_update(c, toy_values(n, round as u64, c as u64), weight(c))).collect()
}

/// The toy data set: [`SAMPLES`] samples of [`FEATURES`] features, label `i % CLASSES`; feature
/// `j` has mean 1.5 in class `j % CLASSES` and 0 elsewhere, plus N(0, 0.5^2) noise.
pub fn toy_dataset() -> Arc<Dataset> {
    let mut rng = RngStream::new(SEED);
    let y: Vec<u32> = (0..SAMPLES).map(|i| (i % CLASSES) as u32).collect();
    let mut x = Vec::with_capacity(SAMPLES * FEATURES);
    for &c in &y {
        for j in 0..FEATURES {
            let mean = if j % CLASSES == c as usize { 1.5 } else { 0.0 };
            x.push(rng.gaussian(mean, 0.5) as f32);
        }
    }
    let d = Dataset {
        name: "toy".into(),
        x,
        y,
        feature_shape: vec![FEATURES],
        classes: CLASSES,
        users: None,
        targets: Vec::new(),
    };
    d.validate().expect("the toy data set is consistent");
    Arc::new(d)
}

/// All of the toy data set, as one client's data.
pub fn toy_data() -> ClientData {
    ClientData::whole(toy_dataset())
}

/// 24 images of 1x12x12 pixels in [0, 1], labels i mod 3: the data the stage suite runs client
/// hooks on (pixel triggers need images: every default trigger fits).
pub fn toy_images() -> ClientData {
    let mut rng = RngStream::new(SEED + 1);
    let n = 24;
    let d = Dataset {
        name: "toy_images".into(),
        x: (0..n * 144).map(|_| rng.uniform() as f32).collect(),
        y: (0..n).map(|i| (i % CLASSES) as u32).collect(),
        feature_shape: vec![1, 12, 12],
        classes: CLASSES,
        users: None,
        targets: Vec::new(),
    };
    ClientData::whole(Arc::new(d))
}

/// The toy data set dealt round-robin to `n` clients.
pub fn toy_clients(n: usize) -> Vec<ClientData> {
    let data = toy_dataset();
    (0..n)
        .map(|k| ClientData { idx: (k as u32..SAMPLES as u32).step_by(n).collect(), ..ClientData::whole(data.clone()) })
        .collect()
}

/// The registry's `logreg` model for the toy data.
pub fn logreg() -> Box<dyn Model> {
    let (spec, _) = build_default(fedkit_models::models(), Kind::Model, "logreg");
    spec.instantiate(&[FEATURES], CLASSES).expect("logreg fits the toy data")
}

/// The registry's `logreg` model for [`toy_images`].
pub fn image_logreg() -> Box<dyn Model> {
    let (spec, _) = build_default(fedkit_models::models(), Kind::Model, "logreg");
    spec.instantiate(&[1, 12, 12], CLASSES).expect("logreg fits the toy images")
}

/// A client context for `round` and `client` with the fixture seed, `train.epochs` local epochs,
/// benign.
pub fn client_ctx<'a>(
    round: u32,
    client: ClientId,
    global: &'a Params,
    broadcast: &'a Extras,
    train: &'a LocalTrain,
) -> ClientCtx<'a> {
    ClientCtx {
        round,
        client,
        seed: SEED,
        global,
        broadcast,
        train,
        epochs: train.epochs,
        malicious: false,
        step: &fedkit_core::PlainStep,
        loss: &fedkit_core::CrossEntropyLoss,
        train_hook: None,
    }
}

/// A server context for `round` with the fixture seed and [`POPULATION`].
pub fn round_ctx<'a>(round: u32, cohort: &'a [ClientId], global: &'a Params) -> RoundCtx<'a> {
    RoundCtx { round, cohort, global, seed: SEED, population: POPULATION, malicious: &[false; POPULATION], draws: &[] }
}

/// [`round_ctx`] in which `COHORT[0]` and `COHORT[1]` attack.
pub fn round_ctx_attacked<'a>(round: u32, cohort: &'a [ClientId], global: &'a Params) -> RoundCtx<'a> {
    static BAD: std::sync::OnceLock<[bool; POPULATION]> = std::sync::OnceLock::new();
    let bad = BAD.get_or_init(|| {
        let mut b = [false; POPULATION];
        b[COHORT[0] as usize] = true;
        b[COHORT[1] as usize] = true;
        b
    });
    RoundCtx { malicious: bad, ..round_ctx(round, cohort, global) }
}

/// Config keys that the engine, not the method, reads from a method's table.
fn extra_keys(kind: Kind) -> &'static [&'static str] {
    if kind == Kind::Stage { &["on"] } else { &[] }
}

/// Build a method of `kind` from `table` (which holds `use`), as the engine does; panics with the
/// method's name on error. Returns the method and its resolved parameters.
pub fn build<T: ?Sized>(entries: &[Entry<T>], kind: Kind, table: &toml::Table) -> (Box<T>, toml::Table) {
    build_from_table(entries, kind, kind.section(), table, extra_keys(kind))
        .unwrap_or_else(|e| panic!("{:?} {}: cannot build from `{table}`: {e}", kind, table["use"]))
}

/// Build the registered method `name` with its default parameters.
pub fn build_default<T: ?Sized>(entries: &[Entry<T>], kind: Kind, name: &str) -> (Box<T>, toml::Table) {
    build(entries, kind, &toml::Table::from_iter([("use".to_string(), toml::Value::from(name))]))
}

/// The encoded bytes (fedkit_core::codec) of `x`: "the same bits" means equal bytes.
pub fn bits<T: Serialize + ?Sized>(x: &T) -> Vec<u8> {
    fedkit_core::codec::to_bytes(x, "fixture").expect("fixtures serialise")
}

/// Assert that `a` and `b` have the same bits; `what` names the method and property.
#[track_caller]
pub fn assert_same_bits<T: Serialize + Debug + ?Sized>(a: &T, b: &T, what: &str) {
    assert!(bits(a) == bits(b), "{what}: results differ in their bits\n  left: {a:?}\n right: {b:?}");
}

/// Assert `|got - want| <= tol * max(1, |want|)` elementwise (NaN fails); `what` names the method
/// and property.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0))
        .fold(0.0, |m: f64, d| if d.is_nan() || d > m { d } else { m });
    assert!(worst <= tol, "{what}: off by {worst:e} (tolerance {tol:e})\n  got: {got:?}\n want: {want:?}");
}

/// Check a registry: names are unique snake_case, and every entry passes [`check_doc`].
pub fn check_registry<T: ?Sized>(entries: &[Entry<T>], kind: Kind) {
    assert!(!entries.is_empty(), "{kind:?} registry is empty");
    for (i, e) in entries.iter().enumerate() {
        let snake = e.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        assert!(snake && !e.name.is_empty(), "{kind:?} `{}`: registry names are snake_case", e.name);
        assert!(entries[..i].iter().all(|o| o.name != e.name), "{kind:?} `{}`: registered twice", e.name);
        check_doc(e, kind);
    }
}

/// Check a method's documentation ([`Entry::doc`]): it names a paper or source (a year, "et al.",
/// arXiv or a URL), contains a ```` ```toml ```` example with `use = "<name>"` in the kind's
/// section that builds, and mentions every parameter of the example's resolved table (or says
/// "parameters: none" when there are none).
pub fn check_doc<T: ?Sized>(entry: &Entry<T>, kind: Kind) {
    let (name, doc) = (entry.name, entry.doc());
    let lower = doc.to_lowercase();
    let year = lower.split(|c: char| !c.is_ascii_digit()).any(|t| t.len() == 4 && ("1900".."2100").contains(&t));
    let cited = year || ["et al", "arxiv", "http"].iter().any(|s| lower.contains(s));
    assert!(cited, "{kind:?} `{name}`: documentation names no paper or source (a year, `et al.`, arXiv or a URL)");
    let example = toml_blocks(&doc)
        .iter()
        .filter_map(|b| b.parse::<toml::Table>().ok())
        .find_map(|t| section_table(&t, kind.section(), name))
        .unwrap_or_else(|| {
            panic!(
                "{kind:?} `{name}`: documentation has no ```toml example with `use = \"{name}\"` under [{}]",
                kind.section()
            )
        });
    let (_, resolved) = build(std::slice::from_ref(entry), kind, &example);
    let params: Vec<&String> =
        resolved.keys().filter(|k| *k != "use" && !extra_keys(kind).contains(&k.as_str())).collect();
    for key in &params {
        assert!(mentions(&doc, key), "{kind:?} `{name}`: parameter `{key}` is not described in the documentation");
    }
    assert!(
        !params.is_empty() || lower.contains("parameters"),
        "{kind:?} `{name}`: documentation should say that it has no parameters (\"Parameters: none\")"
    );
}

/// The contents of the ```` ```toml ```` blocks of `doc`.
fn toml_blocks(doc: &str) -> Vec<String> {
    let (mut out, mut cur): (Vec<String>, Option<String>) = (Vec::new(), None);
    for line in doc.lines() {
        match (&mut cur, line.trim()) {
            (None, "```toml") => cur = Some(String::new()),
            (Some(_), "```") => out.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The table at dotted `section` of `t` (or the element of an array of tables there) whose `use`
/// is `name`.
fn section_table(t: &toml::Table, section: &str, name: &str) -> Option<toml::Table> {
    let (last, path) = section.split('.').collect::<Vec<_>>().split_last().map(|(l, p)| (*l, p.to_vec()))?;
    let parent = path.iter().try_fold(t, |t, p| t.get(*p)?.as_table())?;
    let is = |t: &&toml::Table| t.get("use").and_then(toml::Value::as_str) == Some(name);
    match parent.get(last)? {
        toml::Value::Table(t) => Some(t).filter(is).cloned(),
        toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).find(is).cloned(),
        _ => None,
    }
}

/// Whether `word` occurs in `doc` as a whole identifier.
fn mentions(doc: &str, word: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    doc.match_indices(word)
        .any(|(i, _)| !ident(doc[..i].chars().next_back()) && !ident(doc[i + word.len()..].chars().next()))
}
