//! `fortunes`: a word-level language-modelling corpus, the fortune-cookie files of Debian's
//! `fortunes` package (`apt-get install fortunes`, into `/usr/share/games/fortunes`, the default
//! `data_dir`; `scripts/install-test-deps.sh` installs it): about 16,000 quotations, jokes and
//! definitions in 40-odd topic files (`computers`, `cookie`, `people`, `science`, ...).
//!
//! Each file is one natural user, so `partition = natural` (the default) gives a federation of
//! topics with naturally different vocabularies, as LEAF's Shakespeare gives one client per role.
//! Every tenth fortune of each file (the 10th, 20th, ...) is test data, the rest training data.
//!
//! Text is lower-cased and split into words (maximal runs of letters, digits and apostrophes);
//! every other visible character is a token of its own, and each fortune ends with `<eos>`. The
//! vocabulary is the `vocab - 2` most frequent training tokens (ties broken alphabetically) plus
//! `<unk>` (id 0, every other token) and `<eos>` (id 1). Each file's token stream is cut into
//! windows of `seq_len + 1` tokens overlapping by one: a sample's features are the first
//! `seq_len` token ids (shape `[seq_len]`), its targets the next token at every position (a
//! target per position: `test_loss` is the mean next-token cross-entropy, exp of it the
//! perplexity), and its label `y` the last target (the token that follows the features).
//!
//! Parameters (`[data.fortunes]`): `seq_len` (32), `vocab` (2000, at least 3).
//!
//! ```toml
//! [data]
//! name = "fortunes"
//! [data.fortunes]
//! seq_len = 32
//! vocab = 2000
//! [model]
//! use = "transformer"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fedkit_core::{Dataset, Error, Result};
use serde::{Deserialize, Serialize};

/// Where Debian's `fortunes` package puts the files.
pub const DEFAULT_DIR: &str = "/usr/share/games/fortunes";
/// Token ids of the two special tokens.
pub const UNK: u32 = 0;
pub const EOS: u32 = 1;

/// `[data.fortunes]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FortunesParams {
    /// Tokens per sample (the context length T).
    pub seq_len: usize,
    /// Vocabulary size, `<unk>` and `<eos>` included (the number of classes).
    pub vocab: usize,
}

impl Default for FortunesParams {
    fn default() -> Self {
        FortunesParams { seq_len: 32, vocab: 2000 }
    }
}

/// The tokens of one text: lower-cased words and single punctuation characters.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() && !c.is_control() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The fortunes of one file: the texts between lines holding a single `%`.
fn split_fortunes(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "%" {
            out.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(&text[start..]);
    out.into_iter().filter(|f| !f.trim().is_empty()).collect()
}

/// The topic files of `dir`: regular files that are not `strfile` indexes (`*.dat`), sorted.
fn topic_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let hint = "install Debian's fortunes package (apt-get install fortunes) or set data.data_dir";
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::config("data.data_dir", format!("cannot read {}: {e}; {hint}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|x| x != "dat" && x != "u8"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::config("data.data_dir", format!("{} holds no fortune files; {hint}", dir.display())));
    }
    Ok(files)
}

/// Load the corpus in `dir` (default [`DEFAULT_DIR`]) as (train, test).
pub fn load(p: &FortunesParams, dir: Option<&str>) -> Result<(Dataset, Dataset)> {
    if p.seq_len == 0 {
        return Err(Error::config("data.fortunes.seq_len", "must be >= 1"));
    }
    if p.vocab < 3 {
        return Err(Error::config(
            "data.fortunes.vocab",
            format!("must be >= 3 (<unk>, <eos> and a word), got {}", p.vocab),
        ));
    }
    let dir = Path::new(dir.unwrap_or(DEFAULT_DIR));
    let streams = token_streams(dir)?;
    let ids = vocabulary(streams.iter().flat_map(|s| &s[0]), p.vocab);
    let encode = |s: &[String]| -> Vec<u32> {
        s.iter().map(|t| if t == "<eos>" { EOS } else { ids.get(t.as_str()).copied().unwrap_or(UNK) }).collect()
    };
    let mut sets = [windows_dataset("fortunes/train", p), windows_dataset("fortunes/test", p)];
    let mut users = Vec::new();
    for parts in &streams {
        let before = sets[0].len();
        for (part, set) in parts.iter().zip(sets.iter_mut()) {
            push_windows(set, &encode(part), p.seq_len);
        }
        if sets[0].len() > before {
            // Dense user ids over the files that have training windows.
            let user = users.last().map_or(0, |&u: &u32| u + 1);
            users.resize(sets[0].len(), user);
        }
    }
    let [mut train, test] = sets;
    if train.is_empty() || test.is_empty() {
        return Err(Error::Data(format!(
            "{}: too little text for windows of {} tokens (data.fortunes.seq_len)",
            dir.display(),
            p.seq_len
        )));
    }
    train.users = Some(users);
    Ok((train, test))
}

/// Per topic file of `dir`: its training and its test token streams (every 10th fortune is
/// test), each fortune followed by `<eos>`.
fn token_streams(dir: &Path) -> Result<Vec<[Vec<String>; 2]>> {
    let mut streams = Vec::new();
    for path in topic_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut parts: [Vec<String>; 2] = Default::default();
        for (k, fortune) in split_fortunes(&text).into_iter().enumerate() {
            let part = &mut parts[(k % 10 == 9) as usize];
            part.extend(tokenize(fortune));
            part.push("<eos>".into());
        }
        streams.push(parts);
    }
    Ok(streams)
}

/// The vocabulary of [`load`] with the same parameters: the token of every id, `<unk>` and
/// `<eos>` first (to print what a language model or an attack produces).
pub fn words(p: &FortunesParams, dir: Option<&str>) -> Result<Vec<String>> {
    let streams = token_streams(Path::new(dir.unwrap_or(DEFAULT_DIR)))?;
    let ids = vocabulary(streams.iter().flat_map(|s| &s[0]), p.vocab);
    let mut words = vec![String::new(); ids.values().map(|&i| i as usize + 1).max().unwrap_or(2).max(2)];
    words[UNK as usize] = "<unk>".into();
    words[EOS as usize] = "<eos>".into();
    for (w, &i) in &ids {
        words[i as usize] = (*w).to_string();
    }
    Ok(words)
}

/// Token ids of the `vocab - 2` most frequent tokens (from 2; ties alphabetical).
fn vocabulary<'a>(tokens: impl Iterator<Item = &'a String>, vocab: usize) -> HashMap<&'a str, u32> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in tokens.filter(|t| *t != "<eos>") {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.into_iter().take(vocab - 2).enumerate().map(|(i, (t, _))| (t, i as u32 + 2)).collect()
}

fn windows_dataset(name: &str, p: &FortunesParams) -> Dataset {
    Dataset { name: name.into(), feature_shape: vec![p.seq_len], classes: p.vocab, ..Default::default() }
}

/// Append the windows of `stream`: features `s[i..i + T]`, targets `s[i + 1..i + T + 1]` for
/// i = 0, T, 2T, ...
fn push_windows(d: &mut Dataset, stream: &[u32], t: usize) {
    let mut i = 0;
    while i + t < stream.len() {
        d.x.extend(stream[i..i + t].iter().map(|&v| v as f32));
        d.targets.extend_from_slice(&stream[i + 1..i + t + 1]);
        d.y.push(stream[i + t]);
        i += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_punctuation_are_tokens() {
        assert_eq!(tokenize("Don't PANIC!\n\t-- Douglas"), ["don't", "panic", "!", "-", "-", "douglas"]);
    }

    #[test]
    fn fortunes_split_on_percent_lines() {
        assert_eq!(split_fortunes("a b\n%\nc\n%\n\n%\nd"), ["a b\n", "c\n", "d"]);
    }

    fn corpus(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        // Ten fortunes per file: the tenth of each goes to the test set.
        let fortunes = |w: &str| (0..10).map(|k| format!("{w} {w} the {k}\n")).collect::<Vec<_>>().join("%\n");
        std::fs::write(dir.join("alpha"), fortunes("cat")).unwrap();
        std::fs::write(dir.join("beta"), fortunes("dog")).unwrap();
        std::fs::write(dir.join("alpha.dat"), [0u8, 159, 146, 150]).unwrap();
    }

    #[test]
    fn windows_shift_targets_by_one_and_files_are_users() {
        let dir = std::env::temp_dir().join(format!("fedkit-fortunes-{}", std::process::id()));
        corpus(&dir);
        let p = FortunesParams { seq_len: 4, vocab: 6 };
        let (train, test) = load(&p, dir.to_str()).unwrap();
        train.validate().unwrap();
        test.validate().unwrap();
        assert_eq!(train.positions(), 4);
        // Each training fortune is 4 words and <eos>: 9 * 5 = 45 tokens per file, 11 windows.
        assert_eq!(train.len(), 22);
        let users = train.users.as_ref().unwrap();
        assert_eq!((users[0], users[21]), (0, 1));
        // Targets are the features shifted by one, and y is the token after the window.
        for i in 0..train.len() {
            let (x, t) = (train.features(i), &train.targets[i * 4..(i + 1) * 4]);
            assert!(x[1..].iter().zip(&t[..3]).all(|(&a, &b)| a as u32 == b));
            assert_eq!(train.y[i], t[3]);
        }
        // vocab 6: <unk>, <eos>, then the 4 most frequent training tokens (cat, dog, the: 18 each;
        // then digit 0 of 9 at one count, alphabetically first), everything else <unk>.
        assert!(train.targets.iter().all(|&v| v < 6));
        assert!(train.targets.contains(&UNK) && train.targets.contains(&EOS));
        // The test set has the tenth fortune of each file ("cat cat the 9", "dog dog the 9").
        assert_eq!(test.len(), 2);
        // words() names every id: the most frequent tokens alphabetically, from id 2.
        assert_eq!(words(&p, dir.to_str()).unwrap(), ["<unk>", "<eos>", "cat", "dog", "the", "0"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_folder_names_the_package_and_the_key() {
        let e = load(&FortunesParams::default(), Some("/nonexistent/fortunes")).unwrap_err().to_string();
        assert!(e.contains("data.data_dir") && e.contains("apt-get install fortunes"), "{e}");
        let e = load(&FortunesParams { seq_len: 4, vocab: 2 }, None).unwrap_err().to_string();
        assert!(e.contains("data.fortunes.vocab"), "{e}");
    }
}
