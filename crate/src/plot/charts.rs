//! Charts: training curves, lines of y against x, sweeps with their spread over seeds, the confusion
//! matrix, pixel histograms.

use std::ops::Range;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::Canvas;
use super::{centered, err, font, render, series_color, Figure, FONT};
use crate::data::{CLASS_NAMES, NUM_CLASSES};
use crate::error::{Error, Result};
use crate::metrics::{ConfusionMatrix, Spread};
use crate::train::{EpochLog, History};
use plotters::coord::Shift;

/// Loss and accuracy per epoch of one or more runs, overlaid: one colour per run, training solid,
/// validation dashed (the TensorBoard comparison of the TF-Estimators episode).
pub fn training_curves(runs: &[(&str, &History)]) -> Result<Figure> {
    let max_epoch = runs.iter().flat_map(|(_, h)| h.epochs.iter().map(|e| e.epoch)).max().unwrap_or(1).max(2);
    render(1100, 430, |root| {
        let (l, r) = root.split_horizontally(550);
        type Get = fn(&EpochLog) -> (f64, Option<f64>);
        let panels: [(&DrawingArea<_, _>, &str, Get); 2] =
            [(&l, "loss", |e| (e.loss, e.val_loss)), (&r, "accuracy", |e| (e.accuracy, e.val_accuracy))];
        for (area, what, get) in panels {
            let values: Vec<f64> = runs
                .iter()
                .flat_map(|(_, h)| {
                    h.epochs.iter().flat_map(|e| {
                        let (a, b) = get(e);
                        std::iter::once(a).chain(b)
                    })
                })
                .collect();
            let ys = if values.is_empty() { 0.0..1.0 } else { padded_range(&values, 0.08, 1e-3) };
            let decimals = y_decimals(&ys);
            let mut chart = ChartBuilder::on(area)
                .caption(what, font(18.0))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(1f64..max_epoch as f64, ys)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-9 { format!("{x:.0}") } else { String::new() })
                .y_label_formatter(&|y| format!("{y:.*}", decimals))
                .label_style(font(12.0))
                .draw()
                .map_err(err)?;
            for (k, (name, h)) in runs.iter().enumerate() {
                let color = series_color(k);
                let train: Vec<(f64, f64)> = h.epochs.iter().map(|e| (e.epoch as f64, get(e).0)).collect();
                draw_line(&mut chart, format!("{name} train"), &train, color, 3)?;
                let val: Vec<(f64, f64)> =
                    h.epochs.iter().filter_map(|e| get(e).1.map(|v| (e.epoch as f64, v))).collect();
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

/// Lines of y against x, e.g. accuracy against the number of epochs: `series` = (name, points). A series
/// of more than 60 points (a value per batch) is drawn as a line without dots.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[(&str, &[(f64, f64)])]) -> Result<Figure> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    if pts.is_empty() {
        return Err(Error::InvalidArgument("nothing to plot".into()));
    }
    let (xr, yr) = padded(&pts, (0.05, 0.5), 0.1);
    let yr = not_below_zero(&pts, yr);
    let decimals = y_decimals(&yr);
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
            .y_label_formatter(&|y| format!("{y:.*}", decimals))
            .label_style(font(12.0))
            .draw()
            .map_err(err)?;
        for (k, (name, p)) in series.iter().enumerate() {
            // A dot per point, unless the points are too many to tell apart (a rate per batch).
            let dot = if p.len() > DOTTED_POINTS { 0 } else { 4 };
            draw_line(&mut chart, name.to_string(), p, series_color(k), dot)?;
        }
        let corner = emptiest_corner(&chart, series, 13.0)?;
        draw_legend(&mut chart, corner, 13.0)
    })
}

/// A grid of runs (see [`Spread`]): for each series a line through the means over seeds, with a bar
/// from the smallest to the largest value at each x. With `log_x` the x axis is logarithmic (learning
/// rates).
pub fn spread(sweep: &Spread, title: &str, x_desc: &str, y_desc: &str, log_x: bool) -> Result<Figure> {
    let fx = |x: f64| if log_x { x.log10() } else { x };
    let all: Vec<(f64, f64)> = sweep
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().flat_map(|(x, v)| v.iter().map(move |&y| (fx(*x), y))))
        .collect();
    if all.is_empty() {
        return Err(Error::InvalidArgument("nothing to plot: the sweep has no results".into()));
    }
    let (xr, yr) = padded(&all, (0.08, 0.1), 0.12);
    let decimals = y_decimals(&yr);
    render(720, 430, |root| {
        let mut chart = xy_chart(root, title, xr.clone(), yr.clone())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|y| format!("{y:.*}", decimals))
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
            let means: Vec<(f64, f64)> =
                pts.iter().map(|(x, v)| (*x, v.iter().sum::<f64>() / v.len().max(1) as f64)).collect();
            draw_line(&mut chart, format!("{name} (mean, min–max)"), &means, color, 4)?;
            let cap = (xr.end - xr.start) * 0.01;
            for (x, v) in &pts {
                let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
                for seg in
                    [vec![(*x, lo), (*x, hi)], vec![(x - cap, lo), (x + cap, lo)], vec![(x - cap, hi), (x + cap, hi)]]
                {
                    chart.draw_series(std::iter::once(PathElement::new(seg, color.stroke_width(2)))).map_err(err)?;
                }
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 13.0)
    })
}

/// The range of `values` widened on both sides by `frac` of its span, at least by `min`.
fn padded_range(values: &[f64], frac: f64, min: f64) -> Range<f64> {
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * frac).max(min);
    (lo - pad)..(hi + pad)
}

/// The ranges of `points` with margins: x by `x_frac` of its span (at least `x_min`), y by `y_frac`.
fn padded(points: &[(f64, f64)], (x_frac, x_min): (f64, f64), y_frac: f64) -> (Range<f64>, Range<f64>) {
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().cloned().unzip();
    (padded_range(&xs, x_frac, x_min), padded_range(&ys, y_frac, 1e-3))
}

/// `y` cut at 0 when no point is negative (a learning rate decaying to 0, a loss): the margin does
/// not invent negative values.
pub(crate) fn not_below_zero(points: &[(f64, f64)], y: Range<f64>) -> Range<f64> {
    if y.start < 0.0 && points.iter().all(|p| p.1 >= 0.0) {
        0.0..y.end
    } else {
        y
    }
}

/// [`lines`] marks each point of a series with a dot up to this many points.
const DOTTED_POINTS: usize = 60;

/// Decimals of the y labels over `ys`: three, or more when the ticks (about ten over the range) are
/// closer than 0.001 — a learning rate's 0.0005 steps would otherwise all read 0.001.
pub(super) fn y_decimals(ys: &Range<f64>) -> usize {
    let step = (ys.end - ys.start) / 10.0;
    if !(step > 0.0 && step.is_finite()) {
        return 3;
    }
    ((-step.log10()).ceil().max(3.0) as usize).min(9)
}

/// A titled x-y chart over `xs` × `ys` with room for the axis labels.
pub(super) fn xy_chart<'a, 'b>(
    root: &'a DrawingArea<Canvas<'b>, Shift>,
    title: &str,
    xs: Range<f64>,
    ys: Range<f64>,
) -> Result<XyChart<'a, 'b>> {
    ChartBuilder::on(root)
        .caption(title, font(18.0))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)
        .map_err(err)
}

/// An x-y chart with `f64` axes.
pub(super) type XyChart<'a, 'b> = ChartContext<
    'a,
    Canvas<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A solid line with a dot at each point and a legend entry.
fn draw_line(
    chart: &mut XyChart<'_, '_>,
    name: String,
    points: &[(f64, f64)],
    color: RGBAColor,
    dot: i32,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points.to_vec(), color.stroke_width(2)))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    if dot > 0 {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, dot, color.filled()))).map_err(err)?;
    }
    Ok(())
}

/// The corner where a legend of `series` at font `size` covers the fewest points of their lines
/// (matplotlib's `loc="best"`), in the order lower right (where rising accuracy curves leave room),
/// upper right, upper left, lower left: first wins a tie.
pub(super) fn emptiest_corner(
    chart: &XyChart<'_, '_>,
    series: &[(&str, &[(f64, f64)])],
    size: f64,
) -> Result<SeriesLabelPosition> {
    use SeriesLabelPosition::*;
    let area = chart.plotting_area();
    let (xs, ys) = area.get_pixel_range();
    let (aw, ah) = (xs.end - xs.start, ys.end - ys.start);
    // The box plotters draws: the widest label, the legend's 30-pixel sample line and 10-pixel
    // margins, lines 1.25 of the font size apart; 5 pixels from the corner.
    let mut text_w = 0;
    for (name, _) in series {
        text_w = text_w.max(area.estimate_text_size(name, &font(size)).map_err(err)?.0 as i32);
    }
    let (w, h) = (text_w + 30 + 20, (series.len() as f64 * size * 1.25).ceil() as i32 + 20);
    // Points along every line, at most 2 pixels apart, in pixels of the plotting area.
    let mut px = Vec::new();
    for (_, pts) in series {
        let at = |p: &(f64, f64)| {
            let (x, y) = chart.backend_coord(p);
            ((x - xs.start) as f64, (y - ys.start) as f64)
        };
        for seg in pts.windows(2) {
            let (a, b) = (at(&seg[0]), at(&seg[1]));
            let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / 2.0).ceil().clamp(1.0, 2000.0) as usize;
            for k in 0..steps {
                let t = k as f64 / steps as f64;
                px.push(((a.0 + (b.0 - a.0) * t) as i32, (a.1 + (b.1 - a.1) * t) as i32));
            }
        }
        if let Some(p) = pts.last() {
            let (x, y) = at(p);
            px.push((x as i32, y as i32));
        }
    }
    let covered = |corner: &SeriesLabelPosition| {
        let x0 = if matches!(corner, LowerRight | UpperRight) { aw - w - 5 } else { 5 };
        let y0 = if matches!(corner, UpperRight | UpperLeft) { 5 } else { ah - h - 5 };
        px.iter().filter(|&&(x, y)| (x0..=x0 + w).contains(&x) && (y0..=y0 + h).contains(&y)).count()
    };
    let corners = [LowerRight, UpperRight, UpperLeft, LowerLeft];
    let best = corners.iter().enumerate().min_by_key(|(i, c)| (covered(c), *i)).map(|(i, _)| i).unwrap_or(0);
    Ok(match best {
        1 => UpperRight,
        2 => UpperLeft,
        3 => LowerLeft,
        _ => LowerRight,
    })
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

/// The confusion matrix's layout: a cell's side, and where the grid's top-left corner is (room for the
/// class names on the left, the title above).
pub(super) const CONFUSION_CELL: i32 = 58;
pub(super) const CONFUSION_ORIGIN: (i32, i32) = (130, 40);

/// Heatmap of the confusion matrix (rows: true class, columns: predicted class) with the counts.
pub fn confusion_matrix(cm: &ConfusionMatrix) -> Result<Figure> {
    let max = cm.counts.iter().cloned().max().unwrap_or(1).max(1) as f64;
    let (cellw, (x0, y0)) = (CONFUSION_CELL, CONFUSION_ORIGIN);
    let side = cellw * NUM_CLASSES as i32;
    render((x0 + side + 20) as u32, (y0 + side + 120) as u32, |root| {
        root.draw(&Text::new(
            format!("Confusion matrix (accuracy {:.4})", cm.accuracy()),
            (x0 + side / 2, 10),
            centered(17.0, BLACK),
        ))
        .map_err(err)?;
        for (t, class) in CLASS_NAMES.iter().enumerate() {
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
            root.draw(&Text::new(*class, (x0 - 6, c), font(13.0).pos(Pos::new(HPos::Right, VPos::Center))))
                .map_err(err)?;
            let cx = x0 + t as i32 * cellw + cellw / 2;
            root.draw(&Text::new(
                *class,
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
                    Rectangle::new(
                        [(i as f64 * w, 0.0), ((i + 1) as f64 * w, c as f64)],
                        RGBColor(31, 119, 180).filled(),
                    )
                }))
                .map_err(err)?;
        }
        Ok(())
    })
}
