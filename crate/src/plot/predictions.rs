//! Figures of predictions: captions blue when right and red when wrong, the ten probabilities as bars,
//! image + bars pairs (the guide's `plot_image` and `plot_value_array`).

use ndarray::{Array1, Array2, Axis};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::images::tiles;
use super::{binary, centered, draw_image, err, font, render, Figure, GREY, RIGHT, WRONG};
use crate::data::{sample_indices, Dataset, CLASS_NAMES, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::metrics;
use crate::train::argmax;

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
    let captions: Vec<(Vec<String>, RGBColor)> =
        wrong.iter().map(|&(i, p, prob)| (caption_lines(p, prob, data.labels[i] as usize), WRONG)).collect();
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
fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    probs: &[f32],
    truth: Option<usize>,
    names: bool,
) -> Result<()> {
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
            area.draw(&Text::new(*name, (x + 7, y + 6), font(12.0).transform(FontTransform::Rotate90))).map_err(err)?;
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
fn draw_pair<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &Dataset,
    probs: &Array2<f32>,
    i: usize,
) -> Result<()> {
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
