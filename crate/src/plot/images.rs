//! Figures of images: one large with a colour bar, grids of tiles with captions, a linear classifier's
//! weights drawn as images.

use ndarray::{Array2, Axis};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{binary, canvas, centered, draw_image, err, font, render, viridis, AsImage, Figure, GREY};
use crate::data::{Dataset, CLASS_NAMES, NUM_CLASSES};
use crate::error::{Error, Result};

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
            let p = t * scale + scale / 2;
            root.draw(&Text::new(t.to_string(), (x0 + p, y0 + side + 4), centered(13.0, BLACK))).map_err(err)?;
            root.draw(&Text::new(t.to_string(), (x0 - 4, y0 + p), font(13.0).pos(Pos::new(HPos::Right, VPos::Center))))
                .map_err(err)?;
        }
        // Colour bar.
        let (bx, bw) = (x0 + side + 25, 22);
        for i in 0..side {
            let v = 1.0 - i as f32 / (side - 1) as f32;
            root.draw(&Rectangle::new([(bx, y0 + i), (bx + bw, y0 + i + 1)], viridis(v).filled())).map_err(err)?;
        }
        root.draw(&Rectangle::new([(bx, y0), (bx + bw, y0 + side)], BLACK.stroke_width(1))).map_err(err)?;
        let ticks: Vec<f32> = if top > 1.0 {
            (0..=5).map(|k| k as f32 * 50.0).collect()
        } else {
            (0..=5).map(|k| k as f32 * 0.2).collect()
        };
        for t in ticks {
            let y = y0 + side - ((t / top) * side as f32).round() as i32;
            root.draw(&PathElement::new(vec![(bx + bw, y), (bx + bw + 5, y)], BLACK)).map_err(err)?;
            let label = if top > 1.0 { format!("{t:.0}") } else { format!("{t:.1}") };
            root.draw(&Text::new(label, (bx + bw + 8, y), font(13.0).pos(Pos::new(HPos::Left, VPos::Center))))
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
    let labels: Vec<(Vec<String>, RGBColor)> =
        indices.iter().map(|&i| (vec![CLASS_NAMES[data.labels[i] as usize].to_string()], BLACK)).collect();
    tiles(data, &indices, &labels, cols, 4)
}

/// Caption text size in the image tiles: 12 px stays readable at the size a notebook shows it.
const CAPTION_PX: f64 = 12.0;

/// Tiles of images with a coloured caption of one or more lines each; a tile is as wide as its
/// widest caption line needs, so the figure is no wider than it must be.
pub(super) fn tiles(
    data: &Dataset,
    indices: &[usize],
    captions: &[(Vec<String>, RGBColor)],
    cols: usize,
    scale: i32,
) -> Result<Figure> {
    let cols = cols.max(1);
    let rows = indices.len().div_ceil(cols).max(1);
    let side = 28 * scale;
    let line_h = CAPTION_PX as i32 + 3;
    let lines = captions.iter().map(|c| c.0.len()).max().unwrap_or(0) as i32;
    let widest =
        captions.iter().flat_map(|c| &c.0).map(|l| canvas::text_width(CAPTION_PX as f32, l)).max().unwrap_or(0);
    let tile_w = side.max(widest) + 12;
    let tile_h = side + 6 + lines * line_h + 6;
    render((cols as i32 * tile_w + 10) as u32, (rows as i32 * tile_h + 10) as u32, |root| {
        for (k, (&i, (caption, color))) in indices.iter().zip(captions).enumerate() {
            let (r, c) = ((k / cols) as i32, (k % cols) as i32);
            let x = 5 + c * tile_w + (tile_w - side) / 2;
            let y = 5 + r * tile_h;
            let img = data.images.index_axis(Axis(0), i).mapv(|p| p as f32 / 255.0);
            draw_image(root, img.view(), (x, y), scale, binary)?;
            root.draw(&Rectangle::new([(x, y), (x + side, y + side)], GREY.stroke_width(1))).map_err(err)?;
            for (j, line) in caption.iter().enumerate() {
                let at = (5 + c * tile_w + tile_w / 2, y + side + 5 + j as i32 * line_h);
                root.draw(&Text::new(line.clone(), at, centered(CAPTION_PX, *color))).map_err(err)?;
            }
        }
        Ok(())
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
