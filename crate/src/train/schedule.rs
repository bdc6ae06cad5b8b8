//! Learning-rate schedules: Keras' `keras.optimizers.schedules` (exponential, inverse-time, cosine with
//! warm-up — functions of the step), PyTorch's `StepLR` (a function of the epoch) and Keras'
//! `ReduceLROnPlateau` callback (a function of the monitored metric). The base rate is the compiled
//! optimizer's; `fit` sets the rate before every batch, records each epoch's in the history, the run
//! log and TensorBoard (`epoch_learning_rate`), and puts the compiled rate back when it returns.

use serde::{Deserialize, Serialize};

use super::history::EpochLog;
use super::Monitor;
use crate::error::{Error, Result};

/// How the learning rate changes while `fit` trains (`FitOptions { lr_schedule: Some(…), .. }`). `step`
/// counts the batches of this fit from 0, as Keras' `optimizer.iterations` does from `compile`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// × `factor` every `every` epochs: `lr · factor^⌊(epoch - 1) / every⌋` (PyTorch's `StepLR(step_size,
    /// gamma)`).
    Step { every: usize, factor: f64 },
    /// `lr · decay_rate^(step / decay_steps)`, the exponent floored when `staircase` (Keras'
    /// `ExponentialDecay`).
    Exponential { decay_steps: usize, decay_rate: f64, staircase: bool },
    /// `lr / (1 + decay_rate · step / decay_steps)`, the ratio floored when `staircase` (Keras'
    /// `InverseTimeDecay`, the TF *Overfit and underfit* tutorial's).
    InverseTime { decay_steps: usize, decay_rate: f64, staircase: bool },
    /// Keras' `CosineDecay`: with `warmup_target`, linear from `lr` to it over `warmup_steps`; then half a
    /// cosine from the peak down to `alpha ·` peak over `decay_steps`, and flat after.
    Cosine { decay_steps: usize, alpha: f64, warmup_steps: usize, warmup_target: Option<f64> },
    /// Keras' `ReduceLROnPlateau`: × `factor` when the monitored value has not improved for `patience`
    /// epochs.
    ReduceOnPlateau(ReduceOnPlateau),
}

/// The settings of [`Schedule::ReduceOnPlateau`], with Keras' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReduceOnPlateau {
    pub monitor: Monitor,
    /// The rate is multiplied by this (0.1).
    pub factor: f64,
    /// Epochs without improvement before a reduction (10).
    pub patience: usize,
    /// The least change that counts as an improvement (1e-4).
    pub min_delta: f64,
    /// Epochs after a reduction before counting again (0).
    pub cooldown: usize,
    /// The rate never goes below this (0).
    pub min_lr: f64,
}

impl Default for ReduceOnPlateau {
    fn default() -> Self {
        ReduceOnPlateau {
            monitor: Monitor::ValLoss,
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

impl Schedule {
    /// The rate at `step` (0-based, this fit's batches) of `epoch` (1-based) from the base rate `lr`;
    /// `plateau` is [`Schedule::ReduceOnPlateau`]'s current rate.
    pub fn rate(&self, lr: f64, step: usize, epoch: usize, plateau: Option<&PlateauState>) -> f64 {
        let s = step as f64;
        match *self {
            Schedule::Step { every, factor } => lr * factor.powi(((epoch.max(1) - 1) / every.max(1)) as i32),
            Schedule::Exponential { decay_steps, decay_rate, staircase } => {
                let p = s / decay_steps as f64;
                lr * decay_rate.powf(if staircase { p.floor() } else { p })
            }
            Schedule::InverseTime { decay_steps, decay_rate, staircase } => {
                let p = s / decay_steps as f64;
                lr / (1.0 + decay_rate * if staircase { p.floor() } else { p })
            }
            Schedule::Cosine { decay_steps, alpha, warmup_steps, warmup_target } => {
                let cosine = |step: f64, from: f64| {
                    let done = step.min(decay_steps as f64) / decay_steps as f64;
                    from * ((1.0 - alpha) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()) + alpha)
                };
                match warmup_target {
                    None => cosine(s, lr),
                    Some(target) if s < warmup_steps as f64 => lr + (target - lr) * s / warmup_steps as f64,
                    Some(target) => cosine(s - warmup_steps as f64, target),
                }
            }
            Schedule::ReduceOnPlateau(_) => plateau.map_or(lr, |p| p.lr),
        }
    }

    /// An error naming the fix for settings no schedule can use.
    pub fn check(&self, needs: impl Fn(Monitor) -> bool) -> Result<()> {
        let bad = |reason: String| Err(Error::Setting { setting: "lr_schedule", reason });
        match *self {
            Schedule::Step { every: 0, .. } => bad("Step needs `every` of at least 1 epoch".into()),
            Schedule::Exponential { decay_steps: 0, .. }
            | Schedule::InverseTime { decay_steps: 0, .. }
            | Schedule::Cosine { decay_steps: 0, .. } => {
                bad("`decay_steps` must be at least 1 (steps are batches)".into())
            }
            Schedule::Cosine { warmup_steps: 0, warmup_target: Some(_), .. } => {
                bad("a warm-up target needs `warmup_steps` of at least 1".into())
            }
            Schedule::Step { factor: f, .. } | Schedule::Exponential { decay_rate: f, .. }
                if !(f.is_finite() && f > 0.0) =>
            {
                bad(format!("the factor must be a positive number, got {f}"))
            }
            Schedule::ReduceOnPlateau(p) if !(p.factor > 0.0 && p.factor < 1.0) => {
                bad(format!("ReduceOnPlateau's factor must be in (0, 1), got {} (Keras' default: 0.1)", p.factor))
            }
            Schedule::ReduceOnPlateau(p) if needs(p.monitor) => bad(format!(
                "ReduceOnPlateau monitors {}, which needs validation data: set validation_split (e.g. 0.1)",
                p.monitor.name()
            )),
            _ => Ok(()),
        }
    }
}

/// Where [`Schedule::ReduceOnPlateau`] stands: kept in checkpoints so a resumed run goes on alike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    pub lr: f64,
    pub best: Option<f64>,
    pub wait: usize,
    pub cooldown: usize,
}

impl PlateauState {
    pub fn new(lr: f64) -> PlateauState {
        PlateauState { lr, best: None, wait: 0, cooldown: 0 }
    }

    /// Keras' `ReduceLROnPlateau.on_epoch_end`: returns the new rate when it was reduced.
    pub fn epoch_end(&mut self, p: &ReduceOnPlateau, log: &EpochLog) -> Option<f64> {
        let value = p.monitor.value(log)?;
        if self.cooldown > 0 {
            self.cooldown -= 1;
            self.wait = 0;
        }
        let improved = match self.best {
            None => true,
            Some(best) if p.monitor.lower_is_better() => value < best - p.min_delta,
            Some(best) => value > best + p.min_delta,
        };
        if improved {
            self.best = Some(value);
            self.wait = 0;
            return None;
        }
        if self.cooldown > 0 {
            return None;
        }
        self.wait += 1;
        if self.wait < p.patience || self.lr <= p.min_lr {
            return None;
        }
        self.lr = (self.lr * p.factor).max(p.min_lr);
        self.cooldown = p.cooldown;
        self.wait = 0;
        Some(self.lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each schedule against Keras' (and PyTorch's) formula, at steps chosen to show its shape.
    #[test]
    fn schedules_follow_keras_formulas() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
        let exp = Schedule::Exponential { decay_steps: 100, decay_rate: 0.5, staircase: false };
        close(exp.rate(0.1, 0, 1, None), 0.1);
        close(exp.rate(0.1, 150, 1, None), 0.1 * 0.5f64.powf(1.5));
        let stairs = Schedule::Exponential { decay_steps: 100, decay_rate: 0.5, staircase: true };
        close(stairs.rate(0.1, 199, 1, None), 0.05);
        // The TF tutorial: InverseTimeDecay(0.001, decay_steps=STEPS_PER_EPOCH*1000, decay_rate=1).
        let inv = Schedule::InverseTime { decay_steps: 20_000, decay_rate: 1.0, staircase: false };
        close(inv.rate(1e-3, 20_000, 1, None), 5e-4);
        close(inv.rate(1e-3, 60_000, 1, None), 2.5e-4);
        let inv_stairs = Schedule::InverseTime { decay_steps: 10, decay_rate: 2.0, staircase: true };
        close(inv_stairs.rate(1.0, 19, 1, None), 1.0 / 3.0);
        let step = Schedule::Step { every: 3, factor: 0.1 };
        close(step.rate(1.0, 0, 3, None), 1.0);
        close(step.rate(1.0, 0, 4, None), 0.1);
        close(step.rate(1.0, 0, 7, None), 0.01);
        let cos = Schedule::Cosine { decay_steps: 100, alpha: 0.1, warmup_steps: 0, warmup_target: None };
        close(cos.rate(1.0, 0, 1, None), 1.0);
        close(cos.rate(1.0, 50, 1, None), 0.1 + 0.9 * 0.5);
        close(cos.rate(1.0, 100, 1, None), 0.1);
        close(cos.rate(1.0, 1000, 1, None), 0.1);
        let warm = Schedule::Cosine { decay_steps: 100, alpha: 0.0, warmup_steps: 10, warmup_target: Some(1e-2) };
        close(warm.rate(0.0, 0, 1, None), 0.0);
        close(warm.rate(0.0, 5, 1, None), 5e-3);
        close(warm.rate(0.0, 10, 1, None), 1e-2);
        close(warm.rate(0.0, 60, 1, None), 5e-3);
        close(warm.rate(0.0, 110, 1, None), 0.0);
    }

    fn log(epoch: usize, val_loss: f64) -> EpochLog {
        EpochLog {
            epoch,
            loss: 1.0,
            accuracy: 0.5,
            val_loss: Some(val_loss),
            val_accuracy: Some(0.5),
            seconds: 1.0,
            learning_rate: None,
        }
    }

    /// Keras' ReduceLROnPlateau: reduce after `patience` epochs without improvement, wait `cooldown`,
    /// never below `min_lr`.
    #[test]
    fn plateau_reduces_after_patience_and_cools_down() {
        let p = ReduceOnPlateau { factor: 0.5, patience: 2, cooldown: 1, min_lr: 0.2, ..Default::default() };
        let mut s = PlateauState::new(1.0);
        let losses = [1.0, 0.9, 0.95, 0.92, 0.93, 0.94, 0.96, 0.97, 0.98, 0.99];
        let rates: Vec<f64> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                s.epoch_end(&p, &log(i + 1, l));
                s.lr
            })
            .collect();
        assert_eq!(rates, [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]);
        let none = Schedule::ReduceOnPlateau(p);
        assert!(none.check(|m| m.needs_validation()).is_err(), "val_loss without validation data is refused");
        assert!(Schedule::Step { every: 0, factor: 0.5 }.check(|_| false).is_err());
    }
}
