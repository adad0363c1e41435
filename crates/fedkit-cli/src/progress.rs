//! The progress display, with `indicatif`: on a terminal, a bar per run (round, rate, ETA, the
//! latest test accuracy and losses) and, for `compare`, `sweep` and `matrix`, an overall bar
//! over the variants above it; when stderr is not a terminal (logs, CI), a line every tenth of a
//! run and one per variant instead. `--quiet` silences both.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use fedkit_engine::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every bar of the process draws through this, so the overall bar stays above the run's.
fn multi() -> &'static MultiProgress {
    static M: OnceLock<MultiProgress> = OnceLock::new();
    M.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

fn tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Print a line on stderr without tearing the bars.
pub fn note(msg: &str) {
    multi().suspend(|| eprintln!("{msg}"));
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let r = s.per_sec();
            let _ = if r >= 10.0 {
                write!(w, "{r:.0} rounds/s")
            } else if r > 0.0 {
                write!(w, "{:.1} s a round", 1.0 / r)
            } else {
                write!(w, "-")
            };
        })
        .progress_chars("#>-")
}

/// Whether an [`Overall`] bar is showing (a finished run's bar then clears itself).
static OVERALL: AtomicBool = AtomicBool::new(false);

/// The bar over the variants of `compare`, `sweep` and `matrix`.
pub struct Overall {
    bar: Option<ProgressBar>,
    quiet: bool,
    done: u64,
    total: u64,
}

impl Overall {
    pub fn new(quiet: bool, total: usize, what: &str) -> Self {
        let bar = (!quiet && tty()).then(|| {
            let b = multi().add(ProgressBar::new(total as u64));
            b.set_style(style("{prefix} [{bar:24.green/white}] {pos}/{len} {msg} (elapsed {elapsed}, ETA {eta})"));
            b.set_prefix(what.to_string());
            OVERALL.store(true, Ordering::Relaxed);
            b
        });
        Overall { bar, quiet, done: 0, total: total as u64 }
    }

    /// Variant `label` starts.
    pub fn start(&mut self, label: &str) {
        match &self.bar {
            Some(b) => b.set_message(label.to_string()),
            None if !self.quiet => eprintln!("[{}/{}] {label}", self.done + 1, self.total),
            None => {}
        }
    }

    /// The variant that started last is done.
    pub fn finish_one(&mut self) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_with_message("done");
            OVERALL.store(false, Ordering::Relaxed);
        }
    }
}

/// The progress of one run.
pub struct Bar {
    quiet: bool,
    label: String,
    bar: Option<ProgressBar>,
    first_round: Option<u32>,
    last_acc: Option<f64>,
    last_loss: Option<f64>,
}

impl Bar {
    pub fn new(quiet: bool, label: &str) -> Self {
        let bar = (!quiet && tty()).then(|| {
            let b = multi().add(ProgressBar::new(1));
            b.set_style(style("{prefix:8} [{bar:24.cyan/blue}] round {pos}/{len} {msg} ({rate}, ETA {eta})"));
            b.set_prefix(label.to_string());
            b
        });
        Bar { quiet, label: label.to_string(), bar, first_round: None, last_acc: None, last_loss: None }
    }

    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let round = p.record.round();
        if let Some(f) = p.failures.first() {
            let more =
                if p.failures.len() > 1 { format!(" (and {} more)", p.failures.len() - 1) } else { String::new() };
            note(&format!("warning: round {round}: client {} failed and was left out{more}: {}", f.client, f.reason));
        }
        self.last_acc = p.record.get("test_acc").or(self.last_acc);
        self.last_loss = p.record.get("train_loss").or(self.last_loss);
        if round == 0 {
            return;
        }
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let stats = format!(
            "test_acc {} train_loss {} client_loss {}",
            fmt(self.last_acc),
            fmt(self.last_loss),
            fmt(p.record.get("client_loss"))
        );
        let first = self.first_round.is_none();
        self.first_round.get_or_insert(round - 1);
        match &self.bar {
            Some(b) => {
                b.set_length(p.rounds as u64);
                b.set_position(round as u64);
                b.set_message(stats);
                if first {
                    // A resumed run starts mid-way: the rate counts from here.
                    b.reset_eta();
                }
            }
            None => {
                if round == p.rounds || round % (p.rounds / 10).max(1) == 0 {
                    let label = if self.label.is_empty() { String::new() } else { format!("{:<8} ", self.label) };
                    eprintln!("{label}round {round}/{} {stats}", p.rounds);
                }
            }
        }
    }

    pub fn finish(&self) {
        match &self.bar {
            Some(b) if OVERALL.load(Ordering::Relaxed) => b.finish_and_clear(),
            Some(b) => b.finish(),
            None => {}
        }
    }
}
