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
        if self.on && !self.tty && done < self.total && done * 4 >= (self.quarters + 1) * self.total {
            self.quarters = done * 4 / self.total;
            let elapsed = self.start.elapsed().as_secs_f64();
            if elapsed * self.total as f64 / done as f64 > LONG_EPOCH {
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
