//! `film`: recover the text of a client's batch from its update to a language model (Gupta,
//! Huang, Zhong, Gao, Li, Chen, "Recovering Private Text in Federated Learning of Language
//! Models", NeurIPS 2022; PAPERS.txt 53), on the `transformer` with token inputs.
//!
//! The attacker is the server: it holds the global language model theta and receives a client's
//! update Delta.
//! 1. **Bag of words**: an input embedding `E` (untied from the output layer, as the
//!    `transformer`'s `embed.weight` [V, d]) receives gradient only in the rows of tokens that
//!    occur in the batch's inputs, so the rows of Delta_E that are not zero are exactly the
//!    batch's input tokens (with SGD or Adam and no weight decay; weight decay moves every row,
//!    and DP noise does too).
//! 2. **Beam search under the model**: sequences of the batch's length T, built left to right from
//!    the bag's tokens only, scored by the global model's log-likelihood
//!    sum_t log p_theta(w_t | w_<t) (the first token unscored); the `beam` best prefixes are kept
//!    at every length, and no beam repeats an n-gram (`no_repeat`, bigrams by default: a model
//!    that is unsure otherwise fills the length with ". . ."). A model that memorised its training text ranks the client's sequences
//!    highest, which is the paper's point: the attack works better on trained models.
//! 3. Not built: the paper's prompt-based token reordering of the best beam (phrase and token
//!    swaps rescored by the model).
//!
//! Scores (`fedkit attack film`): the bag's precision and recall against the batch's input
//! tokens; ROUGE-1, ROUGE-2 and ROUGE-L F1 of the best beam against the batch's closest
//! sequence (the paper's measure), and the mean over the best B beams of each one's best match.
//!
//! Parameters (`fedkit attack film` flags): `beam` (the beam width, 16), `no_repeat` (the n-gram
//! length no beam repeats, 2; 0 allows repeats).
//!
//! Example:
//! ```text
//! fedkit run configs/papers/film_fortunes.toml --out runs/film
//! fedkit attack film --run runs/film --round 1 --client 0
//! ```

use std::collections::BTreeSet;

use fedkit_core::{Batch, Error, Mode, Model, Outputs, Params, Result};

/// The name of the input embedding in the transformer's layout.
pub const EMBEDDING: &str = "embed.weight";

/// The tokens whose rows of the input embedding `entry` moved in `update`.
pub fn bag_of_words(update: &Params, entry: &str) -> Result<BTreeSet<u32>> {
    let e = update.layout().get(entry).ok_or_else(|| {
        Error::Method(format!(
            "film reads the input embedding `{entry}`; the model has no such tensor (use model.use = \"transformer\" with input = \"tokens\")"
        ))
    })?;
    let [v, d] = e.shape[..] else {
        return Err(Error::Method(format!("film: `{entry}` is not a matrix [vocab, dim] ({:?})", e.shape)));
    };
    let rows = &update.as_slice()[e.range()];
    Ok((0..v).filter(|&i| rows[i * d..(i + 1) * d].iter().any(|&x| x != 0.0)).map(|i| i as u32).collect())
}

/// One beam: a token sequence and its log-likelihood under the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    pub tokens: Vec<u32>,
    pub log_likelihood: f64,
}

/// The `beam` most likely sequences of length `len` over the tokens of `bag` under the language
/// model (`model` with `params`, `vocab` classes), best first, none repeating an n-gram of
/// length `no_repeat` (0: repeats allowed).
pub fn beam_search(
    model: &mut dyn Model,
    params: &Params,
    bag: &BTreeSet<u32>,
    len: usize,
    vocab: usize,
    beam: usize,
    no_repeat: usize,
) -> Result<Vec<Beam>> {
    if bag.is_empty() || len == 0 || beam == 0 {
        return Err(Error::Method("film: beam search needs tokens, a length >= 1 and a beam >= 1".into()));
    }
    if let Some(&t) = bag.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Method(format!("film: token {t} outside the model's vocabulary of {vocab}")));
    }
    let mut beams: Vec<Beam> = bag.iter().map(|&t| Beam { tokens: vec![t], log_likelihood: 0.0 }).collect();
    let mut out = Outputs::default();
    for step in 1..len {
        // Every prefix padded to the model's length; causal attention ignores the padding.
        let n = beams.len();
        let mut batch = Batch {
            x: Vec::with_capacity(n * len),
            y: vec![0; n],
            targets: vec![0; n * len],
            feature_shape: vec![len],
            classes: vocab,
        };
        for b in &beams {
            batch.x.extend(b.tokens.iter().map(|&t| t as f32));
            batch.x.extend(std::iter::repeat_n(0.0, len - b.tokens.len()));
        }
        model.forward(params, &batch, Mode::Eval, &mut out)?;
        if out.classes != vocab || out.logits.len() != n * len * vocab {
            return Err(Error::Method(format!(
                "film needs a language model with a row of {vocab} logits per position; got {} values for {n} sequences of {len}",
                out.logits.len()
            )));
        }
        let mut next: Vec<(f64, usize, u32)> = Vec::with_capacity(n * bag.len());
        for (i, b) in beams.iter().enumerate() {
            let row = out.logits_of(i * len + step - 1);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_z = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            next.extend(
                bag.iter()
                    .filter(|&&t| !repeats(&b.tokens, t, no_repeat))
                    .map(|&t| (b.log_likelihood + row[t as usize] as f64 - log_z, i, t)),
            );
        }
        next.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        if next.is_empty() {
            return Err(Error::Method(format!(
                "film: no sequence of {len} tokens over the bag of {} without repeating an n-gram of {no_repeat}; lower --no-repeat",
                bag.len()
            )));
        }
        beams = next
            .into_iter()
            .take(beam)
            .map(|(ll, i, t)| {
                let mut tokens = beams[i].tokens.clone();
                tokens.push(t);
                Beam { tokens, log_likelihood: ll }
            })
            .collect();
    }
    beams.sort_by(|a, b| b.log_likelihood.total_cmp(&a.log_likelihood).then(a.tokens.cmp(&b.tokens)));
    beams.truncate(beam);
    Ok(beams)
}

/// True when appending `t` to `tokens` repeats an n-gram of length `n` already in them (n = 0:
/// never).
fn repeats(tokens: &[u32], t: u32, n: usize) -> bool {
    if n == 0 || tokens.len() < n {
        return false;
    }
    let tail = &tokens[tokens.len() + 1 - n..];
    tokens.windows(n).any(|w| w[..n - 1] == *tail && w[n - 1] == t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedkit_core::{Layout, ParamKind};

    /// A language model that predicts token (t + 1) mod V after t, with log-odds 5.
    #[derive(Clone)]
    struct Successor {
        layout: std::sync::Arc<Layout>,
    }

    impl Model for Successor {
        fn clone_box(&self) -> Box<dyn Model> {
            Box::new(self.clone())
        }
        fn layout(&self) -> std::sync::Arc<Layout> {
            self.layout.clone()
        }
        fn init(&self, _: &mut fedkit_core::RngStream) -> Params {
            Params::zeros(self.layout.clone())
        }
        fn forward(&mut self, _: &Params, b: &Batch, _: Mode, out: &mut Outputs) -> Result<()> {
            let v = b.classes;
            out.classes = v;
            out.logits =
                b.x.iter()
                    .flat_map(|&t| (0..v).map(move |k| if k == (t as usize + 1) % v { 5.0 } else { 0.0 }))
                    .collect();
            Ok(())
        }
    }

    #[test]
    fn beam_search_follows_the_model_within_the_bag() {
        let mut l = Layout::new();
        l.push("w", &[1], ParamKind::Weight);
        let mut m = Successor { layout: std::sync::Arc::new(l) };
        let p = m.init(&mut fedkit_core::RngStream::new(0));
        // Bag {2, 3, 4, 7} of V = 8: the likeliest sequences of 3 follow t -> t + 1 for two
        // steps: 2 3 4, then those with one step off the chain.
        let bag: BTreeSet<u32> = [2, 3, 4, 7].into();
        let beams = beam_search(&mut m, &p, &bag, 3, 8, 4, 0).unwrap();
        assert_eq!(beams[0].tokens, [2, 3, 4]);
        assert!(beams.iter().all(|b| b.tokens.len() == 3 && b.tokens.iter().all(|t| bag.contains(t))));
        assert!(beams.windows(2).all(|w| w[0].log_likelihood >= w[1].log_likelihood));
        // log p(3 | 2) = 5 - log(e^5 + 7) for both steps.
        let step = 5.0 - (5f64.exp() + 7.0).ln();
        assert!((beams[0].log_likelihood - 2.0 * step).abs() < 1e-6);
        assert!(beam_search(&mut m, &p, &[9].into(), 3, 8, 4, 0).is_err(), "a token outside the vocabulary");
        // Without repeated bigrams a bag of {2, 3} cannot alternate 2 3 2 3 for long.
        let two = beam_search(&mut m, &p, &[2, 3].into(), 4, 8, 8, 2).unwrap();
        for b in &two {
            let bigrams: BTreeSet<&[u32]> = b.tokens.windows(2).collect();
            assert_eq!(bigrams.len(), b.tokens.len() - 1, "{:?} repeats a bigram", b.tokens);
        }
        assert!(!two.is_empty() && !two.iter().any(|b| b.tokens == [2, 3, 2, 3]));
        assert!(repeats(&[1, 2, 1], 2, 2) && !repeats(&[1, 2, 1], 3, 2) && !repeats(&[1, 1], 1, 0));
    }

    #[test]
    fn the_bag_is_the_rows_that_moved() {
        let mut l = Layout::new();
        l.push("pos.weight", &[2, 2], ParamKind::Weight);
        l.push(EMBEDDING, &[4, 2], ParamKind::Embedding);
        let mut u = Params::zeros(std::sync::Arc::new(l));
        // Rows 1 and 3 of the embedding moved; the positional rows do not count.
        u.as_mut_slice()[..4].fill(1.0);
        u.as_mut_slice()[4 + 2 + 1] = -0.5;
        u.as_mut_slice()[4 + 6] = 1e-30;
        assert_eq!(bag_of_words(&u, EMBEDDING).unwrap(), [1, 3].into());
        assert!(bag_of_words(&u, "nope").unwrap_err().to_string().contains("transformer"));
    }
}
