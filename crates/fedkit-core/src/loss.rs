//! The training loss (`[loss] use = "..."`): a registered [`Loss`] turns a model's outputs into
//! the objective local training descends, through [`Model::vjp`], so it composes with every
//! model, algorithm and local step rule. The default, `cross_entropy`, keeps the models' fused
//! paths (the same bits as before losses existed).

use std::sync::Arc;

use crate::model::{CrossEntropy, Head, Mode, Model, Outputs, check_labels, softmax_cross_entropy};
use crate::{Batch, ClientData, Params, Result, RngStream};

/// What a loss may know about the federation before training starts (set once by the engine).
#[derive(Clone, Debug, Default)]
pub struct LossData {
    /// Training samples per class over the whole federation (the label prior of logit
    /// adjustment, LDAM's margins, the class-balanced weights of deferred re-weighting).
    pub class_counts: Vec<usize>,
    /// A server-side reference split (simulation only): samples drawn from the pooled training
    /// data, for losses that compare features with the global model's (MK-MMD).
    pub reference: Option<ClientData>,
}

/// What a loss sees when a local training run starts: the round, the model it starts from and
/// the client's data (its own label counts for client-local priors).
pub struct LossRun<'a> {
    pub round: u32,
    pub global: &'a Params,
    pub data: &'a ClientData,
    pub model: &'a mut dyn Model,
}

/// A registered training loss.
pub trait Loss: Send + Sync {
    /// Called once by the engine before the first round.
    fn prepare(&mut self, _data: &LossData) -> Result<()> {
        Ok(())
    }
    /// The head that one local training run descends (it may hold per-run state: the round's
    /// class weights, the reference features of the global model).
    fn head(&self, run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>>;
    /// True for the plain mean cross-entropy: models then use their fused path.
    fn is_cross_entropy(&self) -> bool {
        false
    }
    /// Change the logits used for prediction (post-hoc logit adjustment); default: unchanged.
    fn adjust_logits(&self, _logits: &mut [f32], _classes: usize) {}
    /// True when [`Loss::adjust_logits`] changes anything (evaluation then predicts with it).
    fn adjusts_predictions(&self) -> bool {
        false
    }
}

/// The plain mean softmax cross-entropy.
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyLoss;

impl Loss for CrossEntropyLoss {
    fn head(&self, _run: &mut LossRun) -> Result<Box<dyn Head + Send + '_>> {
        Ok(Box::new(CrossEntropy))
    }
    fn is_cross_entropy(&self) -> bool {
        true
    }
}

/// A model whose `loss_grad` and `input_grad` descend `head` instead of the cross-entropy (local
/// training wraps the client's model in it for a non-default loss). Evaluation and the outputs
/// are the inner model's.
pub struct WithHead<'a> {
    pub inner: &'a mut dyn Model,
    pub head: Box<dyn Head + Send + 'a>,
}

impl Model for WithHead<'_> {
    /// A copy of the inner architecture (without the head: heads belong to one training run).
    fn clone_box(&self) -> Box<dyn Model> {
        self.inner.clone_box()
    }
    fn layout(&self) -> Arc<crate::Layout> {
        self.inner.layout()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        self.inner.init(rng)
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: Mode, out: &mut Outputs) -> Result<()> {
        self.inner.forward(params, batch, mode, out)
    }
    fn vjp(
        &mut self,
        params: &mut Params,
        batch: &Batch,
        mode: Mode,
        head: &mut dyn Head,
        grad: Option<&mut Params>,
        gx: Option<&mut Vec<f32>>,
        rng: &mut RngStream,
    ) -> Result<f32> {
        self.inner.vjp(params, batch, mode, head, grad, gx, rng)
    }
    fn loss_grad(&mut self, params: &mut Params, batch: &Batch, grad: &mut Params, rng: &mut RngStream) -> Result<f32> {
        self.inner.vjp(params, batch, Mode::Train, self.head.as_mut(), Some(grad), None, rng)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        self.inner.eval_batch(params, batch)
    }
    fn input_grad(&mut self, params: &Params, batch: &Batch, gx: &mut Vec<f32>) -> Result<f32> {
        let mut p = params.clone();
        self.inner.vjp(&mut p, batch, Mode::TrainFrozen, self.head.as_mut(), None, Some(gx), &mut RngStream::new(0))
    }
}

/// Per class `[correct, count]` of `params`'s top-1 predictions on `data` (clean features, in
/// batches of `batch`), predicting with `predict`'s adjusted logits when given: the balanced
/// accuracy (mean per-class recall) of long-tail learning is the mean of correct / count.
pub fn class_accuracy(
    model: &mut dyn Model,
    params: &Params,
    data: &ClientData,
    batch: usize,
    predict: Option<&dyn Loss>,
) -> Result<Vec<[usize; 2]>> {
    let clean = data.without_transforms();
    let mut out = Outputs::default();
    let mut per = vec![[0usize; 2]; clean.data.classes];
    let mut b = Batch::default();
    let ids: Vec<usize> = (0..clean.len()).collect();
    for chunk in ids.chunks(batch.max(1)) {
        b.fill(&clean, chunk, &mut RngStream::new(0));
        model.forward(params, &b, Mode::Eval, &mut out)?;
        check_labels(&b, out.classes, "per-class accuracy (eval.balanced)")?;
        if let Some(loss) = predict {
            loss.adjust_logits(&mut out.logits, out.classes);
        }
        for (i, &y) in b.y.iter().enumerate() {
            let slot = &mut per[y as usize];
            slot[0] += (crate::model::argmax(out.logits_of(i)) == y as usize) as usize;
            slot[1] += 1;
        }
    }
    Ok(per)
}

/// The mean per-class accuracy over the classes present in `per` (from [`class_accuracy`]).
pub fn balanced_accuracy(per: &[[usize; 2]]) -> f64 {
    let present: Vec<f64> = per.iter().filter(|c| c[1] > 0).map(|c| c[0] as f64 / c[1] as f64).collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

/// A model that predicts with a loss's adjusted logits (post-hoc logit adjustment): its
/// `eval_batch` counts correct predictions by the adjusted argmax; the loss it reports stays the
/// plain cross-entropy of the model's logits.
pub struct AdjustedPrediction<'a> {
    pub inner: &'a mut dyn Model,
    pub loss: &'a dyn Loss,
}

impl Model for AdjustedPrediction<'_> {
    fn clone_box(&self) -> Box<dyn Model> {
        self.inner.clone_box()
    }
    fn layout(&self) -> Arc<crate::Layout> {
        self.inner.layout()
    }
    fn init(&self, rng: &mut RngStream) -> Params {
        self.inner.init(rng)
    }
    fn forward(&mut self, params: &Params, batch: &Batch, mode: Mode, out: &mut Outputs) -> Result<()> {
        self.inner.forward(params, batch, mode, out)
    }
    fn eval_batch(&mut self, params: &Params, batch: &Batch) -> Result<(f64, usize)> {
        let mut out = Outputs::default();
        self.inner.forward(params, batch, Mode::Eval, &mut out)?;
        check_labels(batch, out.classes, "a loss that adjusts logits per class (use the default cross-entropy)")?;
        let c = out.classes;
        let mut adjusted = out.logits.clone();
        self.loss.adjust_logits(&mut adjusted, c);
        let correct =
            adjusted.chunks_exact(c).zip(&batch.y).filter(|(row, y)| crate::model::argmax(row) == **y as usize).count();
        let (loss, _) = softmax_cross_entropy(&mut out.logits, &batch.y, c);
        Ok((loss, correct))
    }
}
