//! Keras-style progress: `Epoch 3/10` then
//! `1875/1875 [==============================] - 3s - loss: 0.3145 - accuracy: 0.8851`: a live bar on a
//! terminal, one line per epoch elsewhere (notebooks, where an output cannot be updated in place) — and, when
//! an epoch looks like taking more than [`LONG_EPOCH`], a line at each quarter of it too, so a long epoch
//! visibly lives.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::{Evaluation, Verbosity};

/// An epoch that takes longer than this gets a line at each quarter (off a terminal).
pub(crate) const LONG_EPOCH: f64 = 10.0;

/// Whether batch `done` of `total`, `elapsed` seconds into the epoch, gets a line of its own: when it completes
/// a quarter not yet reported (`quarters` were) of an epoch that looks like taking more than [`LONG_EPOCH`].
/// Returns the quarters reported with it.
fn quarter_line(quarters: usize, done: usize, total: usize, elapsed: f64) -> Option<usize> {
    let reached = done * 4 / total.max(1);
    let long = done > 0 && elapsed * total as f64 / done as f64 > LONG_EPOCH;
    (done < total && reached > quarters && long).then_some(reached)
}

pub(crate) struct Progress {
    on: bool,
    tty: bool,
    total: usize,
    start: Instant,
    last_draw: Instant,
    /// Quarters of the epoch reported so far (off a terminal).
    quarters: usize,
}

impl Progress {
    pub fn new(v: Verbosity, epoch: usize, epochs: usize, total: usize) -> Self {
        let on = v == Verbosity::Progress;
        if on {
            println!("Epoch {epoch}/{epochs}");
        }
        let tty = std::io::stdout().is_terminal();
        Progress { on, tty, total, start: Instant::now(), last_draw: Instant::now(), quarters: 0 }
    }

    fn bar(&self, done: usize) -> String {
        let width = 30;
        let filled = (done * width) / self.total.max(1);
        let mut bar = "=".repeat(filled);
        if filled < width {
            bar.push('>');
            bar.push_str(&" ".repeat(width - filled - 1));
        }
        let w = self.total.to_string().len();
        format!("{done:>w$}/{} [{bar}]", self.total)
    }

    pub fn batch(&mut self, done: usize, loss: f64, accuracy: f64) {
        if self.on && !self.tty {
            let elapsed = self.start.elapsed().as_secs_f64();
            if let Some(q) = quarter_line(self.quarters, done, self.total, elapsed) {
                self.quarters = q;
                println!("{} - {elapsed:.0}s - loss: {loss:.4} - accuracy: {accuracy:.4}", self.bar(done));
            }
        }
        if self.on && self.tty && self.last_draw.elapsed().as_millis() >= 100 {
            self.last_draw = Instant::now();
            print!(
                "\r{} - {:.0}s - loss: {loss:.4} - accuracy: {accuracy:.4}",
                self.bar(done),
                self.start.elapsed().as_secs_f64()
            );
            let _ = std::io::stdout().flush();
        }
    }

    pub fn finish(&self, loss: f64, accuracy: f64, val: Option<Evaluation>, seconds: f64) {
        if !self.on {
            return;
        }
        let val =
            val.map(|v| format!(" - val_loss: {:.4} - val_accuracy: {:.4}", v.loss, v.accuracy)).unwrap_or_default();
        println!(
            "{}{} - {:.1}s - loss: {loss:.4} - accuracy: {accuracy:.4}{val}",
            if self.tty { "\r" } else { "" },
            self.bar(self.total),
            seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::quarter_line;

    #[test]
    fn a_long_epoch_gets_a_line_at_each_quarter_a_short_one_none() {
        // 1000 batches at 20 ms: a 20 s epoch → lines at 250, 500, 750 (not at 1000: the epoch's own line).
        let lines: Vec<usize> = (1..=1000)
            .scan(0, |q, done| {
                let line = quarter_line(*q, done, 1000, done as f64 * 0.02);
                *q = line.unwrap_or(*q);
                Some(line.map(|_| done))
            })
            .flatten()
            .collect();
        assert_eq!(lines, [250, 500, 750]);
        // The same at 5 ms a batch (a 5 s epoch): none.
        assert!((1..=1000).all(|done| quarter_line(0, done, 1000, done as f64 * 0.005).is_none()));
    }
}
