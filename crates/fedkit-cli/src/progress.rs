//! The progress display: a bar with round, accuracy, loss and ETA on a terminal; a line every
//! tenth of the run otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use fedkit_engine::Progress;

/// Progress on stderr.
pub struct Bar {
    quiet: bool,
    tty: bool,
    label: String,
    start: Instant,
    first_round: Option<u32>,
    last_acc: Option<f64>,
    last_loss: Option<f64>,
}

impl Bar {
    pub fn new(quiet: bool, label: &str) -> Self {
        Bar {
            quiet,
            tty: std::io::stderr().is_terminal(),
            label: label.to_string(),
            start: Instant::now(),
            first_round: None,
            last_acc: None,
            last_loss: None,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if self.quiet {
            return;
        }
        let round = p.record.round();
        if let Some(f) = p.failures.first() {
            let more =
                if p.failures.len() > 1 { format!(" (and {} more)", p.failures.len() - 1) } else { String::new() };
            let nl = if self.tty { "\n" } else { "" };
            eprintln!("{nl}warning: round {round}: client {} failed and was left out{more}: {}", f.client, f.reason);
        }
        if round == 0 {
            self.last_acc = p.record.get("test_acc");
            self.last_loss = p.record.get("train_loss");
            return;
        }
        let first = *self.first_round.get_or_insert(round - 1);
        self.last_acc = p.record.get("test_acc").or(self.last_acc);
        self.last_loss = p.record.get("train_loss").or(self.last_loss);
        let client_loss = p.record.get("client_loss");
        let done = round - first;
        let left = p.rounds.saturating_sub(round);
        let eta = self.start.elapsed().as_secs_f64() / done.max(1) as f64 * left as f64;
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let stats = format!(
            "round {round}/{} test_acc {} train_loss {} client_loss {} ETA {}",
            p.rounds,
            fmt(self.last_acc),
            fmt(self.last_loss),
            fmt(client_loss),
            hms(eta)
        );
        let label = if self.label.is_empty() { String::new() } else { format!("{:<8} ", self.label) };
        if self.tty {
            let width = 24;
            let filled = (round as usize * width) / p.rounds.max(1) as usize;
            eprint!("\r{label}[{}{}] {stats}   ", "#".repeat(filled), " ".repeat(width - filled));
            let _ = std::io::stderr().flush();
        } else if round == p.rounds || round % (p.rounds / 10).max(1) == 0 {
            eprintln!("{label}{stats}");
        }
    }

    pub fn finish(&self) {
        if !self.quiet && self.tty {
            eprintln!();
        }
    }
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
