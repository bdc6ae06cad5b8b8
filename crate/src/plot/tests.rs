//! The figures, checked by their pixels: colours where the guide puts them, sizes a notebook shows.

use ndarray::{Array1, Array2, Array3, Axis};

use super::charts::{emptiest_corner, not_below_zero, xy_chart, y_decimals, CONFUSION_CELL, CONFUSION_ORIGIN};
use super::*;
use crate::data::{sample_indices, Dataset};
use crate::metrics::{ConfusionMatrix, Spread};
use crate::train::History;

/// Images whose pixel value is `25·class`, labels 0..n % 10.
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
        if d.labels[i].is_multiple_of(2) {
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
        let (cell, (x0, y0)) = (CONFUSION_CELL as u32, CONFUSION_ORIGIN);
        let [r, g, b] = f.pixel(x0 as u32 + p * cell + 4, y0 as u32 + t * cell + 4);
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
                learning_rate: None,
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

/// Axis labels keep three decimals, and more where the ticks are closer than that (a learning rate's
/// 0.0005 steps), so that no two labels read the same.
#[test]
fn y_labels_have_the_decimals_their_ticks_need() {
    assert_eq!(y_decimals(&(0.2..0.95)), 3);
    assert_eq!(y_decimals(&(0.0..0.0035)), 4);
    assert_eq!(y_decimals(&(0.0..2e-5)), 6);
    assert_eq!(y_decimals(&(1.0..1.0)), 3);
}

/// A line chart's margin stops at 0 under values that never go below it (notebook 7's learning rate
/// decays to 0), and keeps going under values that do.
#[test]
fn line_charts_do_not_pad_non_negative_values_below_zero() {
    let rates = [(1.0, 3e-3), (2.0, 1e-3), (3.0, 1e-9)];
    assert_eq!(not_below_zero(&rates, -3e-4..3.3e-3), 0.0..3.3e-3);
    let gaps = [(1.0, -0.9), (2.0, 0.5)];
    assert_eq!(not_below_zero(&gaps, -1.0..0.6), -1.0..0.6);
    assert_eq!(not_below_zero(&rates, 0.5..1.0), 0.5..1.0, "a range above 0 is left alone");
}

/// A line chart's legend goes where the lines are not: the lower right under rising curves
/// (notebooks 5 and 6), the upper right over a rate decaying to 0 (notebook 7), the upper left when
/// both right corners are taken.
#[test]
fn the_legend_takes_the_corner_the_lines_leave_empty() {
    use plotters::prelude::SeriesLabelPosition::{self, *};
    let corner = |series: &[(&str, &[(f64, f64)])]| -> SeriesLabelPosition {
        let mut got = None;
        render(720, 430, |root| {
            let chart = xy_chart(root, "t", 0.0..10.0, 0.0..1.0)?;
            got = Some(emptiest_corner(&chart, series, 13.0)?);
            Ok(())
        })
        .unwrap();
        got.unwrap()
    };
    let rising = [(0.0, 0.1), (10.0, 0.9)];
    assert!(matches!(corner(&[("accuracy", &rising)]), LowerRight));
    let decaying = [(0.0, 0.9), (10.0, 0.0)];
    assert!(matches!(corner(&[("each epoch's last batch (the history)", &decaying)]), UpperRight));
    let (bottom, top_right) = ([(0.0, 0.02), (10.0, 0.02)], [(5.0, 0.98), (10.0, 0.98)]);
    assert!(matches!(corner(&[("a", &bottom), ("b", &top_right)]), UpperLeft));
}
