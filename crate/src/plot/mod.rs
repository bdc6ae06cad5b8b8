//! Every figure of the guide, drawn with plotters into a [`Figure`] (inline in Jupyter, or `.save()`).
//!
//! | guide | function |
//! |---|---|
//! | first training image with a colorbar | [`image_with_colorbar`] |
//! | 5×5 grid of the first 25 images with class names | [`image_grid`] |
//! | 10×10 predictions, blue right / red wrong | [`prediction_grid`] |
//! | `plot_image` + `plot_value_array` | [`image_and_probabilities`], [`prediction_pairs`] |
//! | bar chart with the class names | [`value_array`] |
//! | TensorBoard curves of several runs | [`training_curves`] |
//! | confusion matrix | [`confusion_matrix`] |
//! | pixel histogram before / after normalization | [`pixel_histograms`] |
//! | most confident mistakes | [`confident_mistakes`] |
//! | any y-versus-x lines (e.g. accuracy vs epochs) | [`lines`] |
//! | a grid of runs: mean and spread over seeds | [`spread`] |
//! | what a linear classifier learned: its weights as images | [`weight_images`] |
//!
//! Text uses DejaVu Sans, embedded in the binary (crate `dejavu`): no system fonts needed.
//!
//! | file | what |
//! |---|---|
//! | this one | the canvas, fonts, colour maps and image drawing the figures share |
//! | `images.rs` | images: one with a colour bar, grids of tiles with captions, a linear model's weights |
//! | `predictions.rs` | predictions: captions in blue or red, probability bars, image + bars pairs |
//! | `charts.rs` | charts: training curves, lines, sweeps, the confusion matrix, pixel histograms |
//! | `canvas.rs` | text drawn glyph by glyph (plotters 0.3.7 misplaces glyphs) |

use std::sync::Once;

mod canvas;
mod charts;
mod images;
mod predictions;
#[cfg(test)]
mod tests;

use canvas::Canvas;

use ndarray::{Array2, ArrayView2};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub use crate::display::Figure;
use crate::error::{Error, Result};

pub use charts::{confusion_matrix, lines, pixel_histograms, spread, training_curves};
pub use images::{image_grid, image_with_colorbar, weight_images};
pub use predictions::{
    caption, confident_mistakes, image_and_probabilities, prediction_grid, prediction_pairs, predictions_for,
    value_array,
};

/// Right predictions (the guide's `'blue'`).
pub const RIGHT: RGBColor = RGBColor(0, 0, 255);
/// Wrong predictions (the guide's `'red'`).
pub const WRONG: RGBColor = RGBColor(255, 0, 0);
pub(super) const GREY: RGBColor = RGBColor(119, 119, 119);
pub(super) const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Renders `draw` on a white `width × height` canvas.
pub fn render(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<Canvas<'_>, Shift>) -> Result<()>,
) -> Result<Figure> {
    register_font();
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = Canvas(BitMapBackend::with_buffer(&mut rgb, (width, height))).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(Figure { width, height, rgb })
}

pub(super) fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

pub(super) fn centered(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Top))
}

/// Draws a 28×28 image with its top-left corner at `(x, y)`, `scale` pixels per image pixel.
/// `color` maps a value in `[0, 1]` to a colour.
pub(super) fn draw_image<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    img: ArrayView2<f32>,
    (x, y): (i32, i32),
    scale: i32,
    color: impl Fn(f32) -> RGBColor,
) -> Result<()> {
    for ((r, c), &v) in img.indexed_iter() {
        let (px, py) = (x + c as i32 * scale, y + r as i32 * scale);
        area.draw(&Rectangle::new([(px, py), (px + scale, py + scale)], color(v).filled()))
            .map_err(|e| Error::Plot(format!("{e:?}")))?;
    }
    Ok(())
}

/// Matplotlib's `cmap=plt.cm.binary`: 0 white, 1 black (what the guide's grids use).
pub(super) fn binary(v: f32) -> RGBColor {
    let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8;
    RGBColor(g, g, g)
}

pub(super) fn viridis(v: f32) -> RGBColor {
    ViridisRGB.get_color(v.clamp(0.0, 1.0))
}

/// One image as `f32` in `[0, 1]` plus the top of its original range (255 for raw pixels, 1 for normalized).
pub trait AsImage {
    fn unit(&self) -> (Array2<f32>, f32);
}

impl AsImage for ArrayView2<'_, u8> {
    fn unit(&self) -> (Array2<f32>, f32) {
        (self.mapv(|p| p as f32 / 255.0), 255.0)
    }
}
impl AsImage for ArrayView2<'_, f32> {
    fn unit(&self) -> (Array2<f32>, f32) {
        let max = self.iter().cloned().fold(0.0, f32::max);
        let top = if max > 1.0 { 255.0 } else { 1.0 };
        (self.mapv(|p| p / top), top)
    }
}
impl AsImage for Array2<u8> {
    fn unit(&self) -> (Array2<f32>, f32) {
        self.view().unit()
    }
}
impl AsImage for Array2<f32> {
    fn unit(&self) -> (Array2<f32>, f32) {
        self.view().unit()
    }
}

/// Matplotlib's "tab10" colours, one per series: all dark enough to read on white.
pub(super) fn series_color(k: usize) -> RGBAColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[k % TAB10.len()];
    RGBColor(r, g, b).to_rgba()
}
