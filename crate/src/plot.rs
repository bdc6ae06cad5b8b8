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

use std::sync::Once;

mod canvas;
use canvas::Canvas;

use ndarray::{Array1, Array2, ArrayView2, Axis};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::data::{sample_indices, Dataset, CLASS_NAMES, NUM_CLASSES};
pub use crate::display::Figure;
use crate::error::{Error, Result};
use crate::metrics::{self, ConfusionMatrix, Spread};
use crate::train::{argmax, History};

/// Right predictions (the guide's `'blue'`).
pub const RIGHT: RGBColor = RGBColor(0, 0, 255);
/// Wrong predictions (the guide's `'red'`).
pub const WRONG: RGBColor = RGBColor(255, 0, 0);
const GREY: RGBColor = RGBColor(119, 119, 119);
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn err<E: std::fmt::Display>(e: E) -> Error {
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

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn centered(size: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Top))
}

/// Draws a 28×28 image with its top-left corner at `(x, y)`, `scale` pixels per image pixel.
/// `color` maps a value in `[0, 1]` to a colour.
fn draw_image<DB: DrawingBackend>(
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
fn binary(v: f32) -> RGBColor {
    let g = (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8;
    RGBColor(g, g, g)
}

fn viridis(v: f32) -> RGBColor {
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

/// One image, large, in the viridis colour map with a colour bar of its values (0–255, or 0–1 once
/// normalized) — the guide's `plt.imshow(train_images[0]); plt.colorbar()`.
pub fn image_with_colorbar(image: &impl AsImage) -> Result<Figure> {
    let (img, top) = image.unit();
    if img.shape() != [28, 28] {
        return Err(Error::InvalidArgument(format!("expected a 28×28 image, got {:?}", img.shape())));
    }
    let scale = 14;
    let (x0, y0) = (30, 20);
    let side = 28 * scale;
    render(side as u32 + 170, side as u32 + 50, |root| {
        draw_image(root, img.view(), (x0, y0), scale, viridis)?;
        // Grid ticks every 5 pixels, like matplotlib's axes.
        for t in (0..28).step_by(5) {
            let p = t as i32 * scale + scale / 2;
            root.draw(&Text::new(t.to_string(), (x0 + p, y0 + side + 4), centered(13.0, BLACK)))
                .map_err(err)?;
            root.draw(&Text::new(
                t.to_string(),
                (x0 - 4, y0 + p),
                font(13.0).pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
        }
        // Colour bar.
        let (bx, bw) = (x0 + side + 25, 22);
        for i in 0..side {
            let v = 1.0 - i as f32 / (side - 1) as f32;
            root.draw(&Rectangle::new([(bx, y0 + i), (bx + bw, y0 + i + 1)], viridis(v).filled()))
                .map_err(err)?;
        }
        root.draw(&Rectangle::new([(bx, y0), (bx + bw, y0 + side)], BLACK.stroke_width(1)))
            .map_err(err)?;
        let ticks: Vec<f32> = if top > 1.0 {
            (0..=5).map(|k| k as f32 * 50.0).collect()
        } else {
            (0..=5).map(|k| k as f32 * 0.2).collect()
        };
        for t in ticks {
            let y = y0 + side - ((t / top) * side as f32).round() as i32;
            root.draw(&PathElement::new(vec![(bx + bw, y), (bx + bw + 5, y)], BLACK)).map_err(err)?;
            let label = if top > 1.0 { format!("{t:.0}") } else { format!("{t:.1}") };
            root.draw(&Text::new(
                label,
                (bx + bw + 8, y),
                font(13.0).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}

/// A grid of the first `rows × cols` images (binary colour map) with the class name under each —
/// the guide's 5×5 figure of the first 25 training images.
pub fn image_grid(data: &Dataset, rows: usize, cols: usize) -> Result<Figure> {
    let n = (rows * cols).min(data.len());
    let indices: Vec<usize> = (0..n).collect();
    let labels: Vec<(Vec<String>, RGBColor)> = indices
        .iter()
        .map(|&i| (vec![CLASS_NAMES[data.labels[i] as usize].to_string()], BLACK))
        .collect();
    tiles(data, &indices, &labels, cols, 4)
}

/// Caption text size in the image tiles: 12 px stays readable at the size a notebook shows it.
const CAPTION_PX: f64 = 12.0;

/// Tiles of images with a coloured caption of one or more lines each; a tile is as wide as its
/// widest caption line needs, so the figure is no wider than it must be.
fn tiles(data: &Dataset, indices: &[usize], captions: &[(Vec<String>, RGBColor)], cols: usize, scale: i32) -> Result<Figure> {
    let cols = cols.max(1);
    let rows = indices.len().div_ceil(cols).max(1);
    let side = 28 * scale;
    let line_h = CAPTION_PX as i32 + 3;
    let lines = captions.iter().map(|c| c.0.len()).max().unwrap_or(0) as i32;
    let widest = captions.iter().flat_map(|c| &c.0).map(|l| canvas::text_width(CAPTION_PX as f32, l)).max().unwrap_or(0);
    let tile_w = side.max(widest) + 12;
    let tile_h = side + 6 + lines * line_h + 6;
    render((cols as i32 * tile_w + 10) as u32, (rows as i32 * tile_h + 10) as u32, |root| {
        for (k, (&i, (caption, color))) in indices.iter().zip(captions).enumerate() {
            let (r, c) = ((k / cols) as i32, (k % cols) as i32);
            let x = 5 + c * tile_w + (tile_w - side) / 2;
            let y = 5 + r * tile_h;
            let img = data.images.index_axis(Axis(0), i).mapv(|p| p as f32 / 255.0);
            draw_image(root, img.view(), (x, y), scale, binary)?;
            root.draw(&Rectangle::new([(x, y), (x + side, y + side)], GREY.stroke_width(1)))
                .map_err(err)?;
            for (j, line) in caption.iter().enumerate() {
                let at = (5 + c * tile_w + tile_w / 2, y + side + 5 + j as i32 * line_h);
                root.draw(&Text::new(line.clone(), at, centered(CAPTION_PX, *color))).map_err(err)?;
            }
        }
        Ok(())
    })
}

/// `"Shirt 71% (Coat)"`: predicted class, its probability, true class.
pub fn caption(predicted: usize, probability: f32, truth: usize) -> String {
    format!("{} {:.0}% ({})", CLASS_NAMES[predicted], 100.0 * probability, CLASS_NAMES[truth])
}

/// [`caption`] on two lines, for tiles: `"Shirt 71%"`, `"(Coat)"`.
fn caption_lines(predicted: usize, probability: f32, truth: usize) -> Vec<String> {
    vec![format!("{} {:.0}%", CLASS_NAMES[predicted], 100.0 * probability), format!("({})", CLASS_NAMES[truth])]
}

/// `rows × cols` random images of `data` (drawn with `seed`), each captioned with the predicted class,
/// its probability and the true class — blue when right, red when wrong.
/// `probs` holds the class probabilities of every image of `data` (`model.predict`).
pub fn prediction_grid(data: &Dataset, probs: &Array2<f32>, rows: usize, cols: usize, seed: u64) -> Result<Figure> {
    predictions_for(data, probs, &sample_indices(data.len(), rows * cols, seed), cols)
}

/// The images at `indices`, captioned like [`prediction_grid`] (e.g. five images from the middle of the
/// test set).
pub fn predictions_for(data: &Dataset, probs: &Array2<f32>, indices: &[usize], cols: usize) -> Result<Figure> {
    check_probs(data, probs)?;
    if let Some(&i) = indices.iter().find(|&&i| i >= data.len()) {
        return Err(Error::InvalidArgument(format!("index {i} out of range for {} images", data.len())));
    }
    let captions: Vec<(Vec<String>, RGBColor)> = indices
        .iter()
        .map(|&i| {
            let p = argmax(&probs.row(i).to_vec());
            let t = data.labels[i] as usize;
            (caption_lines(p, probs[[i, p]], t), if p == t { RIGHT } else { WRONG })
        })
        .collect();
    tiles(data, indices, &captions, cols, 3)
}

/// The wrong predictions the model was most sure of, most confident first.
pub fn confident_mistakes(data: &Dataset, probs: &Array2<f32>, n: usize, cols: usize) -> Result<Figure> {
    check_probs(data, probs)?;
    let wrong = metrics::confident_mistakes(&data.labels, probs, n)?;
    let indices: Vec<usize> = wrong.iter().map(|w| w.0).collect();
    let captions: Vec<(Vec<String>, RGBColor)> = wrong
        .iter()
        .map(|&(i, p, prob)| (caption_lines(p, prob, data.labels[i] as usize), WRONG))
        .collect();
    tiles(data, &indices, &captions, cols, 3)
}

fn check_probs(data: &Dataset, probs: &Array2<f32>) -> Result<()> {
    if probs.shape() != [data.len(), NUM_CLASSES] {
        return Err(Error::InvalidArgument(format!(
            "probabilities must be ({}, 10) for these {} images, got {:?}",
            data.len(),
            data.len(),
            probs.shape()
        )));
    }
    Ok(())
}

/// Draws the 10 class probabilities as bars: predicted bar red, true bar blue, others grey, y in [0, 1].
fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, probs: &[f32], truth: Option<usize>, names: bool) -> Result<()> {
    let pred = argmax(probs);
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .x_label_area_size(if names { 95 } else { 18 })
        .y_label_area_size(34)
        .build_cartesian_2d((0..NUM_CLASSES as i32 - 1).into_segmented(), 0f32..1f32)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().y_labels(6).y_label_style(font(11.0)).x_labels(NUM_CLASSES);
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if !names => i.to_string(),
        _ => String::new(),
    };
    mesh.x_label_formatter(&label).x_label_style(font(11.0));
    mesh.draw().map_err(err)?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(3)
                .style_func(|x, _| {
                    let i = match x {
                        SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => *i as usize,
                        SegmentValue::Last => 0,
                    };
                    if Some(i) == truth {
                        RIGHT.filled()
                    } else if i == pred {
                        WRONG.filled()
                    } else {
                        GREY.filled()
                    }
                })
                .data(probs.iter().enumerate().map(|(i, &p)| (i as i32, p))),
        )
        .map_err(err)?;
    if names {
        // Class names under the bars, turned 90° (plotters turns text by right angles only).
        for (i, name) in CLASS_NAMES.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(i as i32), 0.0));
            area.draw(&Text::new(*name, (x + 7, y + 6), font(12.0).transform(FontTransform::Rotate90)))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Bar chart of one prediction with the 10 class names as tick labels (guide: "use the trained model").
pub fn value_array(probs: &Array1<f32>, truth: Option<usize>) -> Result<Figure> {
    let p = probs.to_vec();
    if p.len() != NUM_CLASSES {
        return Err(Error::InvalidArgument(format!("expected 10 probabilities, got {}", p.len())));
    }
    render(520, 380, |root| draw_bars(root, &p, truth, true))
}

/// Draws `plot_image` + `plot_value_array` for image `i` into `area`.
fn draw_pair<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, data: &Dataset, probs: &Array2<f32>, i: usize) -> Result<()> {
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 as i32 / 2);
    let p = probs.row(i).to_vec();
    let pred = argmax(&p);
    let truth = data.labels[i] as usize;
    let (w, h) = left.dim_in_pixel();
    let scale = (((w as i32 - 10).min(h as i32 - 28)) / 28).max(1);
    let side = 28 * scale;
    let x = (w as i32 - side) / 2;
    let img = data.images.index_axis(Axis(0), i).mapv(|v| v as f32 / 255.0);
    draw_image(&left, img.view(), (x, 4), scale, binary)?;
    left.draw(&Rectangle::new([(x, 4), (x + side, 4 + side)], GREY.stroke_width(1))).map_err(err)?;
    let color = if pred == truth { RIGHT } else { WRONG };
    left.draw(&Text::new(caption(pred, p[pred], truth), (w as i32 / 2, side + 8), centered(12.0, color)))
        .map_err(err)?;
    draw_bars(&right, &p, Some(truth), false)
}

/// The guide's `plot_image(i) + plot_value_array(i)` for one test image.
pub fn image_and_probabilities(data: &Dataset, probs: &Array2<f32>, i: usize) -> Result<Figure> {
    check_probs(data, probs)?;
    if i >= data.len() {
        return Err(Error::InvalidArgument(format!("index {i} out of range")));
    }
    render(520, 240, |root| draw_pair(root, data, probs, i))
}

/// The guide's 5 rows × 3 grid of image + probability pairs for the first `rows·cols` images.
pub fn prediction_pairs(data: &Dataset, probs: &Array2<f32>, rows: usize, cols: usize) -> Result<Figure> {
    check_probs(data, probs)?;
    let n = (rows * cols).min(data.len());
    render((cols * 440) as u32, (rows * 200) as u32, |root| {
        let cells = root.split_evenly((rows, cols));
        for (i, area) in cells.iter().enumerate().take(n) {
            draw_pair(area, data, probs, i)?;
        }
        Ok(())
    })
}

/// Loss and accuracy per epoch of one or more runs, overlaid: one colour per run, training solid,
/// validation dashed (the TensorBoard comparison of the TF-Estimators episode).
pub fn training_curves(runs: &[(&str, &History)]) -> Result<Figure> {
    let max_epoch = runs.iter().flat_map(|(_, h)| h.epochs.iter().map(|e| e.epoch)).max().unwrap_or(1).max(2);
    render(1100, 430, |root| {
        let (l, r) = root.split_horizontally(550);
        type Get = fn(&crate::train::EpochLog) -> (f64, Option<f64>);
        let panels: [(&DrawingArea<_, _>, &str, Get); 2] = [
            (&l, "loss", |e| (e.loss, e.val_loss)),
            (&r, "accuracy", |e| (e.accuracy, e.val_accuracy)),
        ];
        for (area, what, get) in panels {
            let values: Vec<f64> = runs
                .iter()
                .flat_map(|(_, h)| h.epochs.iter().flat_map(|e| {
                    let (a, b) = get(e);
                    std::iter::once(a).chain(b)
                }))
                .collect();
            let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let (lo, hi) = if values.is_empty() { (0.0, 1.0) } else { (lo, hi) };
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(what, font(18.0))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(1f64..max_epoch as f64, (lo - pad)..(hi + pad))
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-9 { format!("{x:.0}") } else { String::new() })
                .y_label_formatter(&|y| format!("{y:.3}"))
                .label_style(font(12.0))
                .draw()
                .map_err(err)?;
            for (k, (name, h)) in runs.iter().enumerate() {
                let color = series_color(k);
                let train: Vec<(f64, f64)> = h.epochs.iter().map(|e| (e.epoch as f64, get(e).0)).collect();
                draw_line(&mut chart, format!("{name} train"), &train, color, 3)?;
                let val: Vec<(f64, f64)> = h.epochs.iter().filter_map(|e| get(e).1.map(|v| (e.epoch as f64, v))).collect();
                if !val.is_empty() {
                    chart
                        .draw_series(DashedLineSeries::new(val, 6, 4, color.stroke_width(2)))
                        .map_err(err)?
                        .label(format!("{name} validation"))
                        .legend(move |(x, y)| {
                            // Dashed, as the curve: two strokes of the curve's width.
                            EmptyElement::at((x, y))
                                + PathElement::new(vec![(0, 0), (8, 0)], color.stroke_width(2))
                                + PathElement::new(vec![(12, 0), (20, 0)], color.stroke_width(2))
                        });
                }
            }
            let corner = if what == "loss" { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::LowerRight };
            draw_legend(&mut chart, corner, 12.0)?;
        }
        Ok(())
    })
}

/// Lines of y against x, e.g. accuracy against the number of epochs: `series` = (name, points).
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[(&str, &[(f64, f64)])]) -> Result<Figure> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    if pts.is_empty() {
        return Err(Error::InvalidArgument("nothing to plot".into()));
    }
    let (xr, yr) = padded(&pts, (0.05, 0.5), 0.1);
    render(720, 430, |root| {
        let mut chart = xy_chart(root, title, xr.clone(), yr.clone())?;
        // Whole-number x (epochs): label whole numbers only, never 1.5.
        let whole = pts.iter().all(|p| p.0.fract() == 0.0);
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| match (whole, (x - x.round()).abs() < 1e-9) {
                (true, false) => String::new(),
                (true, true) => format!("{x:.0}"),
                _ => format!("{x}"),
            })
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(font(12.0))
            .draw()
            .map_err(err)?;
        for (k, (name, p)) in series.iter().enumerate() {
            draw_line(&mut chart, name.to_string(), p, series_color(k), 4)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 13.0)
    })
}

/// A grid of runs (see [`Spread`]): for each series a line through the means over seeds, with a bar
/// from the smallest to the largest value at each x. With `log_x` the x axis is logarithmic (learning
/// rates).
pub fn spread(sweep: &Spread, title: &str, x_desc: &str, y_desc: &str, log_x: bool) -> Result<Figure> {
    let fx = |x: f64| if log_x { x.log10() } else { x };
    let all: Vec<(f64, f64)> =
        sweep.series.iter().flat_map(|(_, pts)| pts.iter().flat_map(|(x, v)| v.iter().map(move |&y| (fx(*x), y)))).collect();
    if all.is_empty() {
        return Err(Error::InvalidArgument("nothing to plot: the sweep has no results".into()));
    }
    let (xr, yr) = padded(&all, (0.08, 0.1), 0.12);
    render(720, 430, |root| {
        let mut chart = xy_chart(root, title, xr.clone(), yr.clone())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(font(12.0))
            .draw()
            .map_err(err)?;
        // The grid's own x values as the axis labels.
        let mut xs: Vec<f64> = sweep.series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.dedup();
        for &x in &xs {
            let (px, py) = chart.plotting_area().map_coordinate(&(fx(x), yr.start));
            let label = if log_x { format!("{x:e}") } else { format!("{x}") };
            root.draw(&Text::new(label, (px, py + 6), centered(12.0, BLACK))).map_err(err)?;
        }
        for (k, (name, pts)) in sweep.series.iter().enumerate() {
            let color = series_color(k);
            let mut pts: Vec<(f64, Vec<f64>)> = pts.iter().map(|(x, v)| (fx(*x), v.clone())).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let means: Vec<(f64, f64)> = pts.iter().map(|(x, v)| (*x, v.iter().sum::<f64>() / v.len().max(1) as f64)).collect();
            draw_line(&mut chart, format!("{name} (mean, min–max)"), &means, color, 4)?;
            let cap = (xr.end - xr.start) * 0.01;
            for (x, v) in &pts {
                let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
                for seg in [vec![(*x, lo), (*x, hi)], vec![(x - cap, lo), (x + cap, lo)], vec![(x - cap, hi), (x + cap, hi)]] {
                    chart.draw_series(std::iter::once(PathElement::new(seg, color.stroke_width(2)))).map_err(err)?;
                }
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 13.0)
    })
}

/// RdBu-like diverging colours: blue for −1, white for 0, red for +1.
fn red_blue(v: f32) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let lerp = |a: f32, b: f32, t: f32| (a + (b - a) * t).round() as u8;
    if v >= 0.0 {
        RGBColor(lerp(255.0, 178.0, v), lerp(255.0, 24.0, v), lerp(255.0, 43.0, v))
    } else {
        RGBColor(lerp(255.0, 33.0, -v), lerp(255.0, 102.0, -v), lerp(255.0, 172.0, -v))
    }
}

/// What a linear classifier learned: each of the 10 rows of its `(10, 784)` weight matrix drawn as a
/// 28×28 image, red where a bright pixel is evidence *for* the class, blue where it is evidence
/// against, on one colour scale for all ten.
pub fn weight_images(weights: &Array2<f32>) -> Result<Figure> {
    if weights.shape() != [NUM_CLASSES, 28 * 28] {
        return Err(Error::InvalidArgument(format!(
            "weights must be (10, 784) — a Linear<784, 10>'s `weight` — got {:?}",
            weights.shape()
        )));
    }
    let top = weights.iter().fold(0f32, |m, w| m.max(w.abs())).max(1e-12);
    let (cols, scale, tile_w) = (5, 4, 140);
    let side = 28 * scale;
    let tile_h = side + 26;
    render((cols * tile_w + 10) as u32, (2 * tile_h + 40) as u32, |root| {
        for (k, row) in weights.outer_iter().enumerate() {
            let (r, c) = ((k / cols as usize) as i32, (k % cols as usize) as i32);
            let x = 5 + c * tile_w + (tile_w - side) / 2;
            let y = 5 + r * tile_h;
            let img = row.to_owned().into_shape_with_order((28, 28)).map_err(err)?;
            draw_image(root, img.view(), (x, y), scale, |v| red_blue(v / top))?;
            root.draw(&Rectangle::new([(x, y), (x + side, y + side)], GREY.stroke_width(1))).map_err(err)?;
            root.draw(&Text::new(CLASS_NAMES[k], (5 + c * tile_w + tile_w / 2, y + side + 4), centered(13.0, BLACK)))
                .map_err(err)?;
        }
        let note = format!("red: evidence for the class, blue: against (scale ±{top:.3})");
        root.draw(&Text::new(note, ((cols * tile_w + 10) / 2, 2 * tile_h + 12), centered(13.0, GREY))).map_err(err)?;
        Ok(())
    })
}

/// Matplotlib's "tab10" colours, one per series: all dark enough to read on white.
fn series_color(k: usize) -> RGBAColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ];
    let (r, g, b) = TAB10[k % TAB10.len()];
    RGBColor(r, g, b).to_rgba()
}

/// The ranges of `points` with margins: x by `x_frac` of its span (at least `x_min`), y by `y_frac`.
fn padded(points: &[(f64, f64)], (x_frac, x_min): (f64, f64), y_frac: f64) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xp, yp) = (((x1 - x0) * x_frac).max(x_min), ((y1 - y0) * y_frac).max(1e-3));
    ((x0 - xp)..(x1 + xp), (y0 - yp)..(y1 + yp))
}

/// A titled x-y chart over `xs` × `ys` with room for the axis labels.
fn xy_chart<'a, 'b>(root: &'a DrawingArea<Canvas<'b>, Shift>, title: &str, xs: std::ops::Range<f64>, ys: std::ops::Range<f64>) -> Result<XyChart<'a, 'b>> {
    ChartBuilder::on(root)
        .caption(title, font(18.0))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)
        .map_err(err)
}

/// An x-y chart with `f64` axes.
type XyChart<'a, 'b> =
    ChartContext<'a, Canvas<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A solid line with a dot at each point and a legend entry.
fn draw_line(chart: &mut XyChart<'_, '_>, name: String, points: &[(f64, f64)], color: RGBAColor, dot: i32) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points.to_vec(), color.stroke_width(2)))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, dot, color.filled()))).map_err(err)?;
    Ok(())
}

/// The legend box in one corner of the chart.
fn draw_legend<'a, 'b: 'a>(chart: &mut XyChart<'a, 'b>, corner: SeriesLabelPosition, size: f64) -> Result<()> {
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(font(size))
        .draw()
        .map_err(err)
}

/// Matplotlib's "Blues": white for 0, dark blue for the largest count.
fn blues(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// Heatmap of the confusion matrix (rows: true class, columns: predicted class) with the counts.
pub fn confusion_matrix(cm: &ConfusionMatrix) -> Result<Figure> {
    let max = cm.counts.iter().cloned().max().unwrap_or(1).max(1) as f64;
    let (cellw, x0, y0) = (58, 130, 40);
    let side = cellw * NUM_CLASSES as i32;
    render((x0 + side + 20) as u32, (y0 + side + 120) as u32, |root| {
        root.draw(&Text::new(
            format!("Confusion matrix (accuracy {:.4})", cm.accuracy()),
            (x0 + side / 2, 10),
            centered(17.0, BLACK),
        ))
        .map_err(err)?;
        for t in 0..NUM_CLASSES {
            for p in 0..NUM_CLASSES {
                let n = cm.counts[[t, p]];
                let v = n as f64 / max;
                let (x, y) = (x0 + p as i32 * cellw, y0 + t as i32 * cellw);
                root.draw(&Rectangle::new([(x, y), (x + cellw, y + cellw)], blues(v).filled())).map_err(err)?;
                let ink = if v > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x + cellw / 2, y + cellw / 2),
                    (FONT, 13.0).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(err)?;
            }
            let c = y0 + t as i32 * cellw + cellw / 2;
            root.draw(&Text::new(CLASS_NAMES[t], (x0 - 6, c), font(13.0).pos(Pos::new(HPos::Right, VPos::Center))))
                .map_err(err)?;
            let cx = x0 + t as i32 * cellw + cellw / 2;
            root.draw(&Text::new(
                CLASS_NAMES[t],
                (cx, y0 + side + 6),
                font(13.0).transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
        }
        root.draw(&Rectangle::new([(x0, y0), (x0 + side, y0 + side)], BLACK.stroke_width(1))).map_err(err)?;
        root.draw(&Text::new("true ↓   predicted →", (8, 12), font(12.0))).map_err(err)?;
        Ok(())
    })
}

/// Histograms of pixel values before (0–255) and after (0–1) normalization, side by side.
pub fn pixel_histograms(raw: &ndarray::Array3<u8>, normalized: &ndarray::Array3<f32>) -> Result<Figure> {
    const BINS: usize = 32;
    let mut a = [0u64; BINS];
    for &p in raw {
        a[(p as usize * BINS) / 256] += 1;
    }
    let mut b = [0u64; BINS];
    for &p in normalized {
        b[((p.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)] += 1;
    }
    render(1000, 380, |root| {
        let (l, r) = root.split_horizontally(500);
        for (area, counts, top, title) in [
            (&l, &a, 255f64, "pixel values before normalization (0–255)"),
            (&r, &b, 1f64, "after dividing by 255 (0–1)"),
        ] {
            let ymax = *counts.iter().max().unwrap_or(&1) as f64 * 1.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, font(15.0))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..top, 0f64..ymax.max(1.0))
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc("pixels")
                .y_label_formatter(&|y| crate::model::group_thousands(*y as usize))
                .x_label_formatter(&|x| if top > 1.0 { format!("{x:.0}") } else { format!("{x:.1}") })
                .label_style(font(11.0))
                .draw()
                .map_err(err)?;
            let w = top / BINS as f64;
            chart
                .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                    Rectangle::new([(i as f64 * w, 0.0), ((i + 1) as f64 * w, c as f64)], RGBColor(31, 119, 180).filled())
                }))
                .map_err(err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array3};

    /// Images whose pixel value is `40·class`, labels 0..n % 10.
    fn tiny(n: usize) -> Dataset {
        let labels: Array1<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let mut images = Array3::zeros((n, 28, 28));
        for i in 0..n {
            images.index_axis_mut(Axis(0), i).fill(((i % 10) * 25) as u8);
            images[[i, 14, 14]] = 255;
        }
        Dataset::new(images, labels).unwrap()
    }

    /// Probabilities that are right for even labels, and say "Sandal 90%" for odd ones.
    fn probs(d: &Dataset) -> Array2<f32> {
        let mut p = Array2::from_elem((d.len(), 10), 0.01f32);
        for (i, &l) in d.labels.iter().enumerate() {
            let k = if l % 2 == 0 { l as usize } else { 5 };
            p[[i, k]] = 0.91;
        }
        p
    }

    fn count(f: &Figure, x0: u32, y0: u32, x1: u32, y1: u32, pred: impl Fn([u8; 3]) -> bool) -> usize {
        let mut n = 0;
        for y in y0..y1.min(f.height) {
            for x in x0..x1.min(f.width) {
                n += pred(f.pixel(x, y)) as usize;
            }
        }
        n
    }

    fn is_red(p: [u8; 3]) -> bool {
        p[0] > 180 && p[1] < 110 && p[2] < 110
    }
    fn is_blue(p: [u8; 3]) -> bool {
        p[2] > 180 && p[0] < 110 && p[1] < 110
    }

    #[test]
    fn prediction_grid_labels_are_blue_when_right_and_red_when_wrong() {
        let d = tiny(4);
        let p = probs(&d);
        // 2×2 grid; sample order from the seed, so find each tile's truth from the same draw.
        let f = prediction_grid(&d, &p, 2, 2, 0).unwrap();
        let order = sample_indices(4, 4, 0);
        let (tile_w, tile_h) = ((f.width - 10) / 2, (f.height - 10) / 2);
        assert!(tile_w >= 84 && tile_h > 84 + 2 * 12, "{tile_w}×{tile_h}");
        for (k, &i) in order.iter().enumerate() {
            let (r, c) = ((k / 2) as u32, (k % 2) as u32);
            let (x, y) = (5 + c * tile_w, 5 + r * tile_h + 84);
            let red = count(&f, x, y, x + tile_w, y + tile_h - 84, is_red);
            let blue = count(&f, x, y, x + tile_w, y + tile_h - 84, is_blue);
            if d.labels[i] % 2 == 0 {
                assert!(blue > 20 && red == 0, "tile {k}: blue {blue} red {red}");
            } else {
                assert!(red > 20 && blue == 0, "tile {k}: blue {blue} red {red}");
            }
        }
        // The images are drawn: a dark centre pixel (value 255 → black) in every tile.
        assert_eq!(f.pixel(5 + (tile_w - 84) / 2 + 14 * 3 + 1, 5 + 14 * 3 + 1), [0, 0, 0]);
    }

    #[test]
    fn a_ten_by_ten_grid_fits_a_notebook_column() {
        // Captions on two lines keep the tiles narrow: 10 columns fit the ~1000 px a JupyterLab
        // output area gives, so the 12 px captions are shown at (nearly) their size.
        let d = tiny(100);
        let f = prediction_grid(&d, &probs(&d), 10, 10, 0).unwrap();
        assert!(f.width <= 1010, "{} px wide", f.width);
    }

    #[test]
    fn confusion_diagonal_is_darkest_for_a_perfect_predictor() {
        let labels: Array1<u8> = (0..200).map(|i| (i % 10) as u8).collect();
        let cm = ConfusionMatrix::from_predictions(&labels, &labels).unwrap();
        let f = confusion_matrix(&cm).unwrap();
        let darkness = |t: u32, p: u32| {
            let [r, g, b] = f.pixel(130 + p * 58 + 4, 40 + t * 58 + 4);
            765 - (r as u32 + g as u32 + b as u32)
        };
        for t in 0..10 {
            for p in 0..10 {
                if t != p {
                    assert!(darkness(t, t) > darkness(t, p) + 300, "({t},{p})");
                }
            }
        }
    }

    #[test]
    fn value_array_colours_predicted_red_and_true_blue() {
        let mut p = Array1::from_elem(10, 0.02f32);
        p[3] = 0.8;
        let f = value_array(&p, Some(6)).unwrap();
        assert!(count(&f, 0, 0, f.width, f.height, is_red) > 500);
        assert!(count(&f, 0, 0, f.width, f.height, is_blue) > 20);
        let right = value_array(&p, Some(3)).unwrap();
        assert_eq!(count(&right, 0, 0, right.width, right.height, is_red), 0, "a right prediction is all blue");
    }

    #[test]
    fn every_figure_renders_with_content() {
        let d = tiny(30);
        let p = probs(&d);
        let h = History {
            epochs: (1..=3)
                .map(|e| crate::train::EpochLog {
                    epoch: e,
                    loss: 1.0 / e as f64,
                    accuracy: 0.5 + 0.1 * e as f64,
                    val_loss: Some(1.1 / e as f64),
                    val_accuracy: Some(0.45 + 0.1 * e as f64),
                    seconds: 1.0,
                })
                .collect(),
            ..Default::default()
        };
        let figures = [
            image_with_colorbar(&d.images.index_axis(Axis(0), 9)).unwrap(),
            image_with_colorbar(&d.normalized().index_axis(Axis(0), 9).to_owned()).unwrap(),
            image_grid(&d, 5, 5).unwrap(),
            image_and_probabilities(&d, &p, 1).unwrap(),
            prediction_pairs(&d, &p, 5, 3).unwrap(),
            training_curves(&[("linear", &h), ("deep", &h)]).unwrap(),
            lines("accuracy", "epochs", "accuracy", &[("test", &[(1.0, 0.8), (5.0, 0.88)])]).unwrap(),
            confident_mistakes(&d, &p, 8, 4).unwrap(),
            pixel_histograms(&d.images, &d.normalized()).unwrap(),
        ];
        for f in &figures {
            let non_white = count(f, 0, 0, f.width, f.height, |p| p != [255, 255, 255]);
            assert!(non_white > 2000, "{f:?} has only {non_white} drawn pixels");
            let png = f.to_png().unwrap();
            let r = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
            assert_eq!((r.info().width, r.info().height), (f.width, f.height));
        }
        // 5×5 tiles of 112 px images (scale 4) with one caption line: the images set the tile size.
        assert_eq!((figures[2].width, figures[2].height), (5 * (112 + 12) + 10, 5 * (112 + 6 + 15 + 6) + 10));
        // Bad inputs are errors, not panics.
        assert!(prediction_grid(&d, &Array2::zeros((3, 10)), 2, 2, 0).is_err());
        assert!(value_array(&Array1::zeros(3), None).is_err());
        assert!(lines("x", "x", "y", &[]).is_err());
        assert!(spread(&Spread::default(), "t", "x", "y", true).is_err());
        assert!(weight_images(&Array2::zeros((10, 100))).is_err());
    }

    #[test]
    fn spread_draws_a_bar_per_point_and_weights_are_red_and_blue() {
        let mut s = Spread::default();
        for (x, v) in [(1e-3, 0.80), (1e-3, 0.84), (1e-2, 0.70), (1e-2, 0.78)] {
            s.add("128 hidden", x, v);
        }
        let f = spread(&s, "sweep", "learning rate", "val_accuracy", true).unwrap();
        assert!(count(&f, 0, 0, f.width, f.height, |p| p != [255, 255, 255]) > 2000);
        // A weight matrix positive in class 0's first rows, negative in class 1's.
        let mut w = Array2::<f32>::zeros((10, 784));
        w.slice_mut(ndarray::s![0, ..100]).fill(1.0);
        w.slice_mut(ndarray::s![1, ..100]).fill(-1.0);
        let f = weight_images(&w).unwrap();
        let red = count(&f, 0, 0, f.width, f.height, |p| p[0] > 150 && p[1] < 60 && p[2] < 80);
        let blue = count(&f, 0, 0, f.width, f.height, |p| p[2] > 150 && p[0] < 60);
        assert!(red > 1000 && blue > 1000, "red {red}, blue {blue}");
    }
}
