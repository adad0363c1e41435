//! `transformer`: a small decoder-only (causal) transformer, GPT-2's block (Radford et al.,
//! "Language Models are Unsupervised Multitask Learners", 2019; the architecture of Vaswani et
//! al., "Attention Is All You Need", NeurIPS 2017, with pre-layer normalisation): input
//! embedding plus learned position embedding, `layers` blocks of `x + attn(ln1(x))` then
//! `x + mlp(ln2(x))` (multi-head causal self-attention; a two-layer GELU MLP), a final layer norm
//! and an untied output layer. No dropout.
//!
//! Inputs: samples of shape `[T]` holding token ids (`input = "tokens"`, the default; ids below
//! `vocab`, which defaults to the number of classes, as in a language model), or `[T, F]` real
//! vectors (`input = "continuous"`, projected by a linear layer). Outputs: on data with a target
//! per position (a language model's next tokens, e.g. `data.name = "fortunes"`) one row of logits
//! per position, `[n * T, classes]`, so the default cross-entropy is the mean next-token loss and
//! `test_loss` is its log-perplexity; on data with one label per sample (LEAF's Shakespeare: the
//! next character) the logits of the last position, which attends to the whole sequence. The
//! features are the final layer norm's output at those positions.
//!
//! Parameters: `dim` (d_model, 64), `layers` (2; 0 leaves no attention: each position sees only
//! its own token and place, a bigram model, the baseline of a language model), `heads` (4; must
//! divide `dim`), `mlp` (the MLP's hidden width, 4 * dim when 0), `vocab` (input tokens, the
//! classes when 0), `input`. Entries, the PyTorch module's names (docs/models.md) with linear
//! weights stored `[in, out]`: `embed.weight` (`[vocab, dim]`, or
//! `[F, dim]` plus `embed.bias`), `pos.weight` (`[T, dim]`), per block `blocks.<i>.ln1.*`,
//! `blocks.<i>.attn.qkv.*` (`[dim, 3 dim]`: the query, key and value columns, head h at columns
//! `h * dim / heads ..` of each third), `blocks.<i>.attn.out.*`, `blocks.<i>.ln2.*`,
//! `blocks.<i>.mlp.fc1.*`, `blocks.<i>.mlp.fc2.*`, then `ln_f.*` and `head.*`. Initialisation is
//! GPT-2's: N(0, 0.02) for weights and embeddings, N(0, 0.02 / sqrt(2 layers)) for the residual
//! projections (`attn.out`, `mlp.fc2`), zero biases, unit norm scales.
//!
//! ```toml
//! [data]
//! name = "fortunes"
//! [model]
//! use = "transformer"
//! dim = 64
//! layers = 2
//! heads = 4
//! ```

use std::sync::Arc;

use burn::tensor::{Bool, Tensor, activation, module};
use fedkit_core::{Batch, Error, Layout, Model, ModelSpec, ParamKind, Params, Result, RngStream};
use serde::{Deserialize, Serialize};

use crate::burn_adapter::{BurnModel, Leaves, Net};

/// What the samples hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// `[T]` token ids, embedded by a lookup table.
    #[default]
    Tokens,
    /// `[T, F]` real vectors, embedded by a linear layer.
    Continuous,
}

/// `[model] use = "transformer"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerSpec {
    /// Model width d_model.
    pub dim: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Hidden width of each block's MLP; 0 = 4 * dim.
    pub mlp: usize,
    /// Size of the input vocabulary; 0 = the number of classes.
    pub vocab: usize,
    /// Token ids or real vectors.
    pub input: Input,
}

impl Default for TransformerSpec {
    fn default() -> Self {
        TransformerSpec { dim: 64, layers: 2, heads: 4, mlp: 0, vocab: 0, input: Input::Tokens }
    }
}

impl ModelSpec for TransformerSpec {
    fn instantiate(&self, feature_shape: &[usize], classes: usize) -> Result<Box<dyn Model>> {
        let (context, width) = match (self.input, feature_shape) {
            (Input::Tokens, [t]) => (*t, 1),
            (Input::Continuous, [t, f]) => (*t, *f),
            (input, shape) => {
                let (name, want) = match input {
                    Input::Tokens => ("tokens", "[T] token ids"),
                    Input::Continuous => ("continuous", "[T, F] vectors"),
                };
                return Err(Error::config(
                    "model.input",
                    format!(
                        "transformer with input = \"{name}\" needs samples of {want}; the data's samples have shape {shape:?}"
                    ),
                ));
            }
        };
        if context == 0 || width == 0 {
            return Err(Error::config(
                "model.use",
                format!("transformer needs non-empty samples, got {feature_shape:?}"),
            ));
        }
        for (key, v) in [("dim", self.dim), ("heads", self.heads)] {
            if v == 0 {
                return Err(Error::config(format!("model.{key}"), "must be >= 1"));
            }
        }
        if self.dim % self.heads != 0 {
            return Err(Error::config(
                "model.heads",
                format!("{} heads do not divide dim = {} (each head gets dim / heads columns)", self.heads, self.dim),
            ));
        }
        let vocab = if self.vocab == 0 { classes } else { self.vocab };
        let net = Transformer::new(self.clone(), context, width, vocab, classes);
        Ok(Box::new(BurnModel::new(net, [1, context, width], classes)))
    }
}

/// Layout indices of one block's first entry of each part.
#[derive(Clone)]
struct Block {
    ln1: usize,
    qkv: usize,
    out: usize,
    ln2: usize,
    fc1: usize,
    fc2: usize,
}

/// The network.
#[derive(Clone)]
pub struct Transformer {
    spec: TransformerSpec,
    context: usize,
    vocab: usize,
    layout: Arc<Layout>,
    blocks: Vec<Block>,
    ln_f: usize,
    head: usize,
}

/// Layer norm's epsilon (PyTorch's default).
const LN_EPS: f64 = 1e-5;
/// GPT-2's initialisation scale.
const INIT_STD: f64 = 0.02;

impl Transformer {
    fn new(spec: TransformerSpec, context: usize, width: usize, vocab: usize, classes: usize) -> Transformer {
        let d = spec.dim;
        let hidden = if spec.mlp == 0 { 4 * d } else { spec.mlp };
        let mut l = Layout::new();
        let linear = |l: &mut Layout, name: &str, i: usize, o: usize| {
            let at = l.entries().len();
            l.push(&format!("{name}.weight"), &[i, o], ParamKind::Weight);
            l.push(&format!("{name}.bias"), &[o], ParamKind::Bias);
            at
        };
        let norm = |l: &mut Layout, name: &str| {
            let at = l.entries().len();
            l.push(&format!("{name}.weight"), &[d], ParamKind::NormScale);
            l.push(&format!("{name}.bias"), &[d], ParamKind::NormShift);
            at
        };
        match spec.input {
            Input::Tokens => {
                l.push("embed.weight", &[vocab, d], ParamKind::Embedding);
            }
            Input::Continuous => {
                linear(&mut l, "embed", width, d);
            }
        }
        l.push("pos.weight", &[context, d], ParamKind::Embedding);
        let blocks = (0..spec.layers)
            .map(|b| Block {
                ln1: norm(&mut l, &format!("blocks.{b}.ln1")),
                qkv: linear(&mut l, &format!("blocks.{b}.attn.qkv"), d, 3 * d),
                out: linear(&mut l, &format!("blocks.{b}.attn.out"), d, d),
                ln2: norm(&mut l, &format!("blocks.{b}.ln2")),
                fc1: linear(&mut l, &format!("blocks.{b}.mlp.fc1"), d, hidden),
                fc2: linear(&mut l, &format!("blocks.{b}.mlp.fc2"), hidden, d),
            })
            .collect();
        let ln_f = norm(&mut l, "ln_f");
        let head = linear(&mut l, "head", d, classes);
        Transformer { spec, context, vocab, layout: Arc::new(l), blocks, ln_f, head }
    }

    /// Multi-head causal self-attention of `x` (`[n * T, d]`, sample-major) for block `b`.
    fn attention(&self, p: &mut Leaves, b: &Block, x: Tensor<2>, n: usize) -> Tensor<2> {
        let (t, d, h) = (self.context, self.spec.dim, self.spec.heads);
        let dh = d / h;
        let qkv = crate::nets::linear(p, b.qkv, x).reshape([n, t, 3, h, dh]);
        // [n, T, 3, H, dh] -> three [n, H, T, dh]
        let part = |k: usize| qkv.clone().narrow(2, k, 1).reshape([n, t, h, dh]).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
        let future = Tensor::<2, Bool>::tril_mask([t, t], 0, p.device());
        let bias = Tensor::<2>::zeros([t, t], p.device()).mask_fill(future, -1e9).reshape([1, 1, t, t]);
        let att = activation::softmax(scores.add(bias), 3);
        let o = att.matmul(v).swap_dims(1, 2).reshape([n * t, d]);
        crate::nets::linear(p, b.out, o)
    }
}

/// Layer normalisation over the last dimension with entries `i` (scale) and `i + 1` (shift).
fn layer_norm(p: &mut Leaves, i: usize, x: Tensor<2>) -> Tensor<2> {
    let (scale, shift) = (p.r1(i), p.r1(i + 1));
    let centred = x.clone().sub(x.mean_dim(1));
    let var = centred.clone().square().mean_dim(1);
    let normed = centred.div(var.add_scalar(LN_EPS).sqrt());
    normed.mul(scale.unsqueeze::<2>()).add(shift.unsqueeze::<2>())
}

impl Net for Transformer {
    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        let mut p = Params::zeros(self.layout.clone());
        let residual = INIT_STD / (2.0 * self.spec.layers.max(1) as f64).sqrt();
        for e in self.layout.entries() {
            let v = &mut p.as_mut_slice()[e.range()];
            let std = if e.name.ends_with("attn.out.weight") || e.name.ends_with("mlp.fc2.weight") {
                residual
            } else {
                INIT_STD
            };
            match e.kind {
                ParamKind::Weight | ParamKind::Embedding => v.iter_mut().for_each(|x| *x = (std * rng.normal()) as f32),
                ParamKind::NormScale => v.fill(1.0),
                _ => v.fill(0.0),
            }
        }
        p
    }
    fn per_position(&self) -> bool {
        true
    }
    fn input_gradient(&self) -> std::result::Result<(), &'static str> {
        match self.spec.input {
            Input::Continuous => Ok(()),
            Input::Tokens => {
                Err("the transformer with input = \"tokens\" (token ids are discrete; use input = \"continuous\")")
            }
        }
    }
    fn check_input(&self, batch: &Batch) -> Result<()> {
        if self.spec.input == Input::Continuous {
            return Ok(());
        }
        match batch.x.iter().find(|&&v| !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < self.vocab)) {
            Some(v) => Err(Error::Shape(format!(
                "transformer input {v} is not a token id in 0..{} (vocab; set model.vocab or input = \"continuous\")",
                self.vocab
            ))),
            None => Ok(()),
        }
    }
    fn forward(&self, p: &mut Leaves, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let [n, _, t, f] = x.dims();
        let d = self.spec.dim;
        let embedded = match self.spec.input {
            Input::Tokens => p.r2(0).select(0, x.reshape([n * t]).int()),
            Input::Continuous => crate::nets::linear(p, 0, x.reshape([n * t, f])),
        };
        let pos = p.r2(if self.spec.input == Input::Tokens { 1 } else { 2 });
        let mut h = embedded.reshape([n, t, d]).add(pos.unsqueeze::<3>()).reshape([n * t, d]);
        for (k, b) in self.blocks.iter().enumerate() {
            if k > 0 {
                // the residual stream after block k, at the rows the features have
                let rows = if p.per_position() {
                    h.clone()
                } else {
                    h.clone().reshape([n, t, d]).narrow(1, t - 1, 1).reshape([n, d])
                };
                p.probe(|| format!("block{k}"), &rows);
            }
            let a = layer_norm(p, b.ln1, h.clone());
            h = h.add(self.attention(p, b, a, n));
            let m = layer_norm(p, b.ln2, h.clone());
            let m = activation::gelu(crate::nets::linear(p, b.fc1, m));
            h = h.add(crate::nets::linear(p, b.fc2, m));
        }
        let h = layer_norm(p, self.ln_f, h);
        let features = if p.per_position() { h } else { h.reshape([n, t, d]).narrow(1, t - 1, 1).reshape([n, d]) };
        let logits = module::linear(features.clone(), p.r2(self.head), Some(p.r1(self.head + 1)));
        (features, logits)
    }
}
