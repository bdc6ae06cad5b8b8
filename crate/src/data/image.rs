//! A learner's own picture as a model input: a PNG or JPEG turned into the 28×28 `[0, 1]` image that
//! `Model::predict_one` takes, the way Fashion-MNIST's own images were made.
//!
//! Xiao, Rasul & Vollgraf, *Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
//! Algorithms* (arXiv:1708.07747, 2017), section 2, made each 28×28 image from a Zalando product photo
//! (front view, light background) in seven steps. [`load_image`] follows them:
//!
//! 1. *convert the input to PNG* — here: decode the PNG or JPEG (EXIF rotation applied) and compose any
//!    transparency onto white;
//! 2. *trim the edges close to the colour of the corner pixels*, "close" meaning within 5 % of the
//!    maximum possible intensity in RGB space (5 % of the black–white distance, √3·255);
//! 3. *resize the longest edge to 28* — the paper subsampled (skipped rows and columns); here every
//!    output pixel is the area-weighted mean of the pixels it covers (see [`area_weights`] for why);
//! 4. *sharpen with a Gaussian operator of radius 1.0 and standard deviation 1.0* (an unsharp mask of
//!    strength 1.0, threshold 0);
//! 5. *extend the shortest edge to 28 and put the image at the centre of the canvas*;
//! 6. *negate the intensities* (the garment bright on black, as in the dataset);
//! 7. *convert to 8-bit grayscale* — then divided by 255, like [`normalize`](super::normalize).
//!
//! One step is added between 2 and 3: the background colour the trim found is stretched to white
//! (a phone photo of a shirt on white paper has a grey background); the dataset's backgrounds were
//! already white, so for its pictures this changes nothing.
//!
//! ```no_run
//! # use fashion::prelude::*;
//! # let model: Model<MlpArch> = Model::new(1)?;
//! let image: Array2<f32> = fashion::data::load_image("my-shirt.jpg")?; // (28, 28), in [0, 1]
//! let probabilities = model.predict_one(image.view())?;
//! # Ok::<(), fashion::Error>(())
//! ```
//!
//! Bad files are typed errors ([`Error::Image`], [`Error::Io`] for a missing file), never a panic:
//! a file over [`MAX_FILE_BYTES`] and an image over [`MAX_SIDE`] pixels a side are refused before
//! anything is decoded (a "decompression bomb" declares a huge size in a few bytes).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbaImage};
use ndarray::{Array2, ArrayView2};

use super::SIDE;
use crate::display::Figure;
use crate::error::{Error, Result};

/// The largest file [`load_image`] reads: 128 MiB (a 48-megapixel phone JPEG is 10–20 MB).
pub const MAX_FILE_BYTES: u64 = 128 << 20;
/// The largest width or height decoded: 8192 pixels. With [`MAX_FILE_BYTES`] this bounds the memory
/// one picture takes to about 1 GiB (the file, the decoded pixels, at worst 16-bit RGBA, and an 8-bit copy).
pub const MAX_SIDE: u32 = 8192;
/// The most memory the decoded picture may take: 8192 × 8192 pixels of 16-bit RGBA.
const MAX_DECODED_BYTES: u64 = 512 << 20;

/// The colour distance under which a pixel belongs to the background (step 2): 5 % of √3·255.
const TRIM_DISTANCE: f32 = 0.05 * 255.0 * 1.732_050_8;

/// What went wrong and what to do about it: the `reason` and `fix` of an [`Error::Image`].
type Problem = (String, &'static str);

const FIX_FORMAT: &str = "open it in an image program and save (or export) it as PNG or JPEG";
const FIX_DAMAGED: &str = "copy or download the picture again, or open it in an image program and save it anew";
const FIX_SIZE: &str = "scale the picture down to at most 8192 pixels a side (the model sees 28×28 anyway)";
const FIX_BLANK: &str = "photograph the garment alone on a plain light background of another colour";

/// Reads the PNG or JPEG at `path` and converts it like Fashion-MNIST's images (see the module doc):
/// a `(28, 28)` array in `[0, 1]`, garment bright on a black background, ready for
/// `model.predict_one(image.view())`.
///
/// A missing file is [`Error::Io`]; a file that is empty, not a PNG or JPEG, cut short, too large
/// or one plain colour is [`Error::Image`], whose message says what to do.
pub fn load_image(path: impl AsRef<Path>) -> Result<Array2<f32>> {
    let path = path.as_ref();
    let bytes = read_bounded(path, MAX_FILE_BYTES)?;
    convert_bytes(&bytes).map_err(|(reason, fix)| Error::Image { path: path.to_path_buf(), reason, fix })
}

/// [`load_image`] of a picture already in memory (the bytes of a PNG or JPEG file).
pub fn image_from_bytes(bytes: &[u8]) -> Result<Array2<f32>> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let reason = format!("it is {} MiB, more than the {} MiB read", bytes.len() >> 20, MAX_FILE_BYTES >> 20);
        return Err(Error::Image { path: PathBuf::from("(picture in memory)"), reason, fix: FIX_SIZE });
    }
    convert_bytes(bytes).map_err(|(reason, fix)| Error::Image {
        path: PathBuf::from("(picture in memory)"),
        reason,
        fix,
    })
}

/// A normalized image (`[0, 1]`, garment bright on black, e.g. a test image) drawn as a shop would
/// photograph it: the garment dark on white, each pixel `scale × scale` (smoothly interpolated), with a
/// white margin of 3 image pixels. `.save(path)` writes it as a PNG; [`load_image`] turns it back.
pub fn shop_picture(image: ArrayView2<f32>, scale: usize) -> Result<Figure> {
    let (h, w) = image.dim();
    if h == 0 || w == 0 || scale == 0 || (h.max(w) + 6).saturating_mul(scale) > MAX_SIDE as usize {
        return Err(Error::InvalidArgument(format!(
            "shop_picture of a {h}×{w} image at scale {scale}: the image needs at least one pixel and the \
             picture at most {MAX_SIDE} pixels a side (scale 10 suits a 28×28 image)"
        )));
    }
    if image.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument("shop_picture: the image holds NaN or infinite values".into()));
    }
    let margin = 3 * scale;
    let (fw, fh) = (w * scale + 2 * margin, h * scale + 2 * margin);
    let mut rgb = vec![255u8; fw * fh * 3];
    // Bilinear: output pixel centres mapped back into the image, the four nearest pixels blended.
    let coord = |o: usize, n: usize| {
        let s = ((o as f32 + 0.5) / scale as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = (s.floor() as usize).min(n.saturating_sub(2));
        (i, (i + 1).min(n - 1), s - i as f32)
    };
    for oy in 0..h * scale {
        let (y0, y1, ty) = coord(oy, h);
        for ox in 0..w * scale {
            let (x0, x1, tx) = coord(ox, w);
            let top = image[[y0, x0]] * (1.0 - tx) + image[[y0, x1]] * tx;
            let bottom = image[[y1, x0]] * (1.0 - tx) + image[[y1, x1]] * tx;
            let v = (top * (1.0 - ty) + bottom * ty).clamp(0.0, 1.0);
            let g = (255.0 * (1.0 - v)).round() as u8;
            let i = ((oy + margin) * fw + ox + margin) * 3;
            rgb[i..i + 3].fill(g);
        }
    }
    Ok(Figure { width: fw as u32, height: fh as u32, rgb })
}

/// The file's bytes, at most `max` of them (a larger file, or a device that never ends, is refused
/// without reading more than `max + 1` bytes).
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let too_large = |size: String| Error::Image {
        path: path.to_path_buf(),
        reason: format!("the file is {size}, more than the {} MiB read", max >> 20),
        fix: FIX_SIZE,
    };
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > max {
            return Err(too_large(format!("{} MiB", meta.len() >> 20)));
        }
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_large("larger".into()));
    }
    Ok(bytes)
}

/// Decodes `bytes` (PNG or JPEG, sizes checked first) and converts the picture.
fn convert_bytes(bytes: &[u8]) -> Result<Array2<f32>, Problem> {
    let picture = decode(bytes)?;
    convert(&picture)
}

/// The decoded picture, upright, as 8-bit RGBA.
fn decode(bytes: &[u8]) -> Result<RgbaImage, Problem> {
    if bytes.is_empty() {
        return Err(("the file is empty (0 bytes)".into(), FIX_DAMAGED));
    }
    let format = match ::image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(other) => {
            let name = other.extensions_str().first().map_or("other", |e| *e).to_uppercase();
            return Err((format!("it is a {name} picture, and only PNG and JPEG are read"), FIX_FORMAT));
        }
        Err(_) => {
            let start: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let reason = format!("it is not a PNG or JPEG file (it starts with the bytes {})", start.join(" "));
            return Err((reason, FIX_FORMAT));
        }
    };
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(("the JPEG is cut short (its end-of-image marker is missing)".into(), FIX_DAMAGED));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let too_large =
        |(w, h): (u32, u32)| (format!("it is {w}×{h} pixels, more than the {MAX_SIDE}×{MAX_SIDE} decoded"), FIX_SIZE);
    let damaged = |e: ::image::ImageError| match e {
        // The decoder refused the size its header declares; read the header alone again to say it.
        ::image::ImageError::Limits(e) => {
            match ImageReader::with_format(Cursor::new(bytes), format).into_dimensions() {
                Ok(size) => too_large(size),
                Err(_) => (format!("it is too large to decode ({e})"), FIX_SIZE),
            }
        }
        e => (format!("the file is cut short or damaged ({e})"), FIX_DAMAGED),
    };
    // Only the header has been read here: the size is checked before any pixel is decoded.
    let mut decoder = reader.into_decoder().map_err(damaged)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || decoder.total_bytes() > MAX_DECODED_BYTES {
        return Err(too_large((w, h)));
    }
    if w == 0 || h == 0 {
        return Err((format!("it is {w}×{h} pixels: there is nothing to see"), FIX_DAMAGED));
    }
    let orientation = decoder.orientation().unwrap_or(::image::metadata::Orientation::NoTransforms);
    let mut picture = DynamicImage::from_decoder(decoder).map_err(damaged)?;
    picture.apply_orientation(orientation);
    Ok(picture.into_rgba8())
}

/// Whether a JPEG ends its last scan with the end-of-image marker (`FF D9`). The decoder fills a cut
/// JPEG with grey instead of failing; inside a scan `FF` is always followed by `00` or a restart
/// marker, so an `FF D9` after the last start-of-scan (`FF DA`) is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|m| m == [0xFF, 0xDA]);
    last_scan.is_some_and(|s| bytes[s..].windows(2).any(|m| m == [0xFF, 0xD9]))
}

/// A pixel composed onto white (transparency → white), as `[r, g, b]` in `0..=255`.
fn on_white(p: &::image::Rgba<u8>) -> [f32; 3] {
    let a = p[3] as f32 / 255.0;
    [0, 1, 2].map(|c| p[c] as f32 * a + 255.0 * (1.0 - a))
}

/// Grey level of an RGB colour, in `[0, 1]`: ITU-R BT.601 luma, the weights of an 8-bit grayscale
/// conversion (PIL's `convert("L")`, ImageMagick's Rec601Luma).
fn luma([r, g, b]: [f32; 3]) -> f32 {
    (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
}

/// Steps 2–7 (see the module doc) on a decoded picture.
fn convert(picture: &RgbaImage) -> Result<Array2<f32>, Problem> {
    let (w, h) = picture.dimensions();
    // Step 2: the background is the corners' colour (per-channel median of the four, so a garment
    // reaching into one corner does not count); the garment is every pixel farther from it than 5 %.
    let corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)].map(|(x, y)| on_white(picture.get_pixel(x, y)));
    let background: [f32; 3] = [0, 1, 2].map(|c| {
        let mut v = corners.map(|p| p[c]);
        v.sort_by(f32::total_cmp);
        (v[1] + v[2]) / 2.0
    });
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in picture.enumerate_pixels() {
        let q = on_white(p);
        let d2: f32 = (0..3).map(|c| (q[c] - background[c]).powi(2)).sum();
        if d2 > TRIM_DISTANCE * TRIM_DISTANCE {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        return Err((format!("it is one plain colour ({w}×{h} pixels): there is no garment to find"), FIX_BLANK));
    }
    let (cw, ch) = ((x1 - x0 + 1) as usize, (y1 - y0 + 1) as usize);

    // The added step: a light background stretched to white (a dark one is left alone: the model
    // knows light backgrounds only, and stretching would wash out a light garment).
    let bg = luma(background);
    let stretch = if bg >= 0.5 { 1.0 / bg } else { 1.0 };

    // Step 3: the longest edge to 28, the other in proportion (at least 1 pixel).
    let long = cw.max(ch) as f32;
    let nw = ((cw as f32 * SIDE as f32 / long).round() as usize).clamp(1, SIDE);
    let nh = ((ch as f32 * SIDE as f32 / long).round() as usize).clamp(1, SIDE);
    let (wx, wy) = (area_weights(cw, nw), area_weights(ch, nh));
    // Rows are reduced to `nw` columns as they are read, so no full-size grey copy is ever made.
    let mut narrow = Array2::<f32>::zeros((ch, nw));
    let mut row = vec![0f32; cw];
    for y in 0..ch {
        for (x, v) in row.iter_mut().enumerate() {
            *v = (luma(on_white(picture.get_pixel(x0 + x as u32, y0 + y as u32))) * stretch).min(1.0);
        }
        for (j, (start, weights)) in wx.iter().enumerate() {
            narrow[[y, j]] = weights.iter().zip(&row[*start..]).map(|(a, b)| a * b).sum();
        }
    }
    let small = Array2::from_shape_fn((nh, nw), |(i, j)| {
        let (start, weights) = &wy[i];
        weights.iter().enumerate().map(|(k, a)| a * narrow[[start + k, j]]).sum::<f32>()
    });

    // Step 4, then 5: sharpened, centred on a white 28×28 canvas.
    let sharp = sharpen(small.view());
    let (top, left) = ((SIDE - nh) / 2, (SIDE - nw) / 2);
    let mut canvas = Array2::<f32>::ones((SIDE, SIDE));
    canvas.slice_mut(ndarray::s![top..top + nh, left..left + nw]).assign(&sharp);

    // Steps 6 and 7: negated, 8-bit, then divided by 255 like `normalize`.
    Ok(canvas.mapv(|v| (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() / 255.0))
}

/// The weights of an area-averaging resize of `n` pixels to `m`: for each output pixel, the first
/// source pixel it covers and the share of each source pixel from there (summing to 1).
///
/// The paper resized by subsampling — keeping every k-th row and column — which on its 762×1000 photos
/// kept one pixel in about 30: fine for smooth product shots, but on a phone photo it picks up noise,
/// JPEG blocks and the weave of the fabric (aliasing), and a thin strap can vanish or not depending on
/// where the kept rows fall. Averaging every pixel an output pixel covers keeps what subsampling
/// would show of large shapes and none of the aliasing.
fn area_weights(n: usize, m: usize) -> Vec<(usize, Vec<f32>)> {
    let step = n as f64 / m as f64;
    (0..m)
        .map(|i| {
            let (a, b) = (i as f64 * step, ((i + 1) as f64 * step).min(n as f64));
            let first = a.floor() as usize;
            let last = ((b.ceil() as usize).max(first + 1)).min(n);
            let weights = (first..last)
                .map(|k| (((k + 1) as f64).min(b) - (k as f64).max(a)).max(0.0) / (b - a))
                .map(|x| x as f32);
            (first, weights.collect())
        })
        .collect()
}

/// Step 4: an unsharp mask, `v + 1.0 · (v − blur(v))`, with a 3×3 Gaussian of radius 1 and standard
/// deviation 1, threshold 0; values clipped to `[0, 1]`. Outside the trimmed picture is the white
/// background the trim took away, so a garment's outline is sharpened alike whether or not it
/// touches the edge of the trim.
fn sharpen(image: ArrayView2<f32>) -> Array2<f32> {
    let (h, w) = image.dim();
    let padded = Array2::from_shape_fn((h + 2, w + 2), |(y, x)| {
        if (1..=h).contains(&y) && (1..=w).contains(&x) {
            image[[y - 1, x - 1]]
        } else {
            1.0
        }
    });
    let side = (-0.5f32).exp(); // e^(−d²/2σ²) at d = 1, σ = 1
    let k = [side, 1.0, side].map(|v| v / (1.0 + 2.0 * side));
    let across = Array2::from_shape_fn((h + 2, w), |(y, x)| (0..3).map(|d| k[d] * padded[[y, x + d]]).sum::<f32>());
    Array2::from_shape_fn((h, w), |(y, x)| {
        let blur: f32 = (0..3).map(|d| k[d] * across[[y + d, x]]).sum();
        (2.0 * image[[y, x]] - blur).clamp(0.0, 1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::{ImageEncoder, Rgba};

    /// A `w × h` white picture with a dark grey `rw × rh` rectangle (a shirt) whose top-left is `(x, y)`.
    fn shirt(w: u32, h: u32, (x, y): (u32, u32), (rw, rh): (u32, u32)) -> RgbaImage {
        RgbaImage::from_fn(w, h, |px, py| {
            let inside = (x..x + rw).contains(&px) && (y..y + rh).contains(&py);
            if inside {
                Rgba([40, 45, 60, 255])
            } else {
                Rgba([255, 255, 255, 255])
            }
        })
    }

    fn png(picture: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(picture.clone()).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn jpeg(picture: &RgbaImage) -> Vec<u8> {
        let rgb = DynamicImage::ImageRgba8(picture.clone()).into_rgb8();
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(rgb.as_raw(), rgb.width(), rgb.height(), ::image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// The columns (or rows, `axis` 0) holding any pixel above `v`.
    fn lit(x: &Array2<f32>, axis: usize, v: f32) -> Vec<usize> {
        (0..SIDE).filter(|&i| x.index_axis(ndarray::Axis(axis), i).iter().any(|&p| p > v)).collect()
    }

    fn mean_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        (a - b).mapv(f32::abs).mean().unwrap()
    }

    #[test]
    fn a_dark_shirt_on_white_becomes_a_bright_centred_28_by_28_image() {
        // 80×130 (portrait) on 300×200: trimmed, 130 → 28 rows and 80 → 17 columns, centred.
        let x = image_from_bytes(&png(&shirt(300, 200, (100, 40), (80, 130)))).unwrap();
        assert_eq!(x.dim(), (28, 28));
        assert_eq!(lit(&x, 1, 0.0), (5..22).collect::<Vec<_>>(), "columns\n{x:.1}");
        assert_eq!(lit(&x, 0, 0.0), (0..28).collect::<Vec<_>>(), "rows");
        // Background exactly 0 (as in the dataset), the garment bright: 1 − luma(40, 45, 60)/255 ≈ 0.82.
        assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v) && (v * 255.0).fract().abs() < 1e-4));
        assert!((x[[14, 13]] - 0.82).abs() < 0.01, "{}", x[[14, 13]]);
        assert_eq!(x[[14, 2]], 0.0);
        // Sharpening brightens the outline: the edge columns are brighter than the middle.
        assert!(x[[14, 5]] > x[[14, 13]] && x[[14, 21]] > x[[14, 13]], "{x:.2}");
    }

    #[test]
    fn a_jpeg_gives_what_the_png_gives_within_its_compression_noise() {
        let picture = shirt(300, 200, (100, 40), (80, 130));
        let (p, j) = (image_from_bytes(&png(&picture)).unwrap(), image_from_bytes(&jpeg(&picture)).unwrap());
        let d = mean_abs_diff(&p, &j);
        assert!(d < 0.02, "mean difference {d}");
        assert_eq!(lit(&j, 1, 0.1), (5..22).collect::<Vec<_>>());
        assert!(j.iter().zip(&p).filter(|(_, &q)| q == 0.0).all(|(&v, _)| v < 0.05));
    }

    #[test]
    fn trim_and_centre_make_the_result_independent_of_where_and_how_large_the_garment_is() {
        let base = image_from_bytes(&png(&shirt(300, 200, (100, 40), (80, 130)))).unwrap();
        let moved = image_from_bytes(&png(&shirt(300, 200, (5, 60), (80, 130)))).unwrap();
        assert_eq!(base, moved);
        let larger = image_from_bytes(&png(&shirt(900, 700, (400, 100), (240, 390)))).unwrap();
        assert!(mean_abs_diff(&base, &larger) < 0.01, "{}", mean_abs_diff(&base, &larger));
    }

    #[test]
    fn a_wide_garment_fills_the_width_and_is_centred_vertically() {
        // 200×50 → 28×7: rows 10..17 lit, every column.
        let x = image_from_bytes(&png(&shirt(300, 200, (20, 20), (200, 50)))).unwrap();
        assert_eq!(lit(&x, 0, 0.0), (10..17).collect::<Vec<_>>());
        assert_eq!(lit(&x, 1, 0.0), (0..28).collect::<Vec<_>>());
    }

    #[test]
    fn transparency_is_white_and_a_grey_background_is_stretched_to_white() {
        let opaque = image_from_bytes(&png(&shirt(300, 200, (100, 40), (80, 130)))).unwrap();
        // Transparent black around the shirt: composed onto white, it is the white picture.
        let mut clear = shirt(300, 200, (100, 40), (80, 130));
        clear.pixels_mut().filter(|p| p[0] == 255).for_each(|p| *p = Rgba([0, 0, 0, 0]));
        assert_eq!(image_from_bytes(&png(&clear)).unwrap(), opaque);
        // A phone photo's grey "white": the background still comes out 0 and the shirt bright.
        let mut grey = shirt(300, 200, (100, 40), (80, 130));
        grey.pixels_mut().filter(|p| p[0] == 255).for_each(|p| *p = Rgba([200, 200, 200, 255]));
        let g = image_from_bytes(&png(&grey)).unwrap();
        assert_eq!(lit(&g, 1, 0.0), (5..22).collect::<Vec<_>>());
        assert!(g[[14, 13]] > 0.75, "{}", g[[14, 13]]);
    }

    #[test]
    fn load_image_reads_the_file_like_image_from_bytes_and_a_missing_file_is_io() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = jpeg(&shirt(300, 200, (100, 40), (80, 130)));
        let path = dir.path().join("shirt.jpg");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load_image(&path).unwrap(), image_from_bytes(&bytes).unwrap());
        let e = load_image(dir.path().join("nope.png")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("nope.png") && e.to_string().contains("Fix:"), "{e}");
        assert!(matches!(load_image(dir.path()).unwrap_err(), Error::Io { .. }), "a folder");
    }

    /// The error of `bytes` written to a file, checked to be [`Error::Image`] naming the file, `reason`
    /// and `fix`.
    fn refused(bytes: &[u8], reason: &str, fix: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("picture.png");
        std::fs::write(&path, bytes).unwrap();
        let e = load_image(&path).unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, Error::Image { .. }), "{message}");
        assert!(message.starts_with(&format!("cannot read {} as a picture: ", path.display())), "{message}");
        assert!(message.contains(reason) && message.contains(". Fix: ") && message.contains(fix), "{message}");
        message
    }

    #[test]
    fn bad_files_are_typed_errors_that_name_the_fix() {
        refused(b"", "the file is empty", "copy or download the picture again");
        let m = refused(b"shirt, size M\n", "not a PNG or JPEG file", "save (or export) it as PNG or JPEG");
        assert!(m.contains("73 68 69 72"), "the first bytes: {m}");
        refused(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "it is a GIF picture, and only PNG and JPEG", "as PNG or JPEG");
        let picture = shirt(300, 200, (100, 40), (80, 130));
        let (p, j) = (png(&picture), jpeg(&picture));
        refused(&p[..p.len() / 2], "cut short or damaged", "copy or download the picture again");
        refused(&p[..40], "cut short or damaged", "copy or download the picture again");
        refused(&j[..j.len() / 2], "the JPEG is cut short", "copy or download the picture again");
        refused(
            &png(&RgbaImage::from_pixel(50, 40, Rgba([250, 250, 250, 255]))),
            "one plain colour",
            "plain light background",
        );
    }

    #[test]
    fn pictures_too_large_are_refused_from_their_header_before_decoding() {
        // A PNG whose header claims 100000 × 100000 pixels (40 GB of RGBA): refused at once.
        let mut p = png(&RgbaImage::from_pixel(4, 4, Rgba([0, 0, 0, 255])));
        p[16..24].copy_from_slice(&[0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0]);
        let mut crc = flate2::Crc::new();
        crc.update(&p[12..29]);
        p[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let m = refused(&p, "100000×100000 pixels, more than the 8192×8192", "scale the picture down");
        // The same in a JPEG's frame header (SOF0: height and width at bytes 5..9 of the marker).
        let mut j = jpeg(&shirt(30, 20, (5, 5), (10, 10)));
        let sof = j.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        j[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let mj = refused(&j, "60000×60000", "scale the picture down");
        // A real one just over the side limit.
        let wide = png(&RgbaImage::from_pixel(MAX_SIDE + 1, 2, Rgba([0, 0, 0, 255])));
        refused(&wide, "8193×2 pixels", "at most 8192 pixels a side");
        assert!(!m.contains("cut short") && !mj.contains("cut short"), "{m}\n{mj}");
    }

    #[test]
    fn a_file_over_the_byte_limit_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jpg");
        std::fs::write(&path, vec![0xFF; 3 << 20]).unwrap();
        let e = read_bounded(&path, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("the file is 3 MiB, more than the 1 MiB read") && e.contains("Fix: scale"), "{e}");
        let e = image_from_bytes(&vec![0; MAX_FILE_BYTES as usize + 1]).unwrap_err().to_string();
        assert!(e.contains("(picture in memory)") && e.contains("128 MiB"), "{e}");
    }

    #[test]
    fn a_shop_picture_is_dark_on_white_with_a_margin_and_loads_back() {
        let mut x = Array2::<f32>::zeros((28, 28));
        x.slice_mut(ndarray::s![.., 8..20]).fill(0.8);
        let f = shop_picture(x.view(), 10).unwrap();
        assert_eq!((f.width, f.height), (340, 340));
        assert_eq!(f.pixel(5, 5), [255; 3]);
        assert_eq!(f.pixel(170, 170), [51; 3]);
        let back = image_from_bytes(&f.to_png().unwrap()).unwrap();
        assert!(mean_abs_diff(&back, &x) < 0.05, "{}\n{back:.1}", mean_abs_diff(&back, &x));
        let strip = Array2::<f32>::zeros((1, 28));
        assert!(shop_picture(strip.view(), 0).is_err() && shop_picture(strip.view(), 240).is_ok());
        assert!(shop_picture(strip.view(), 241).is_err(), "(28 + 6) × 241 > 8192 pixels");
        assert!(shop_picture(Array2::zeros((0, 3)).view(), 4).is_err());
        assert!(shop_picture(Array2::from_elem((2, 2), f32::NAN).view(), 4).is_err());
    }

    #[test]
    fn area_weights_cover_every_source_pixel_once() {
        for (n, m) in [(130, 28), (28, 28), (10, 28), (1000, 7), (29, 28)] {
            let w = area_weights(n, m);
            let mut total = vec![0f32; n];
            for (start, ws) in &w {
                assert!((ws.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{n}→{m}");
                ws.iter().enumerate().for_each(|(k, v)| total[start + k] += v * n as f32 / m as f32);
            }
            assert!(total.iter().all(|t| (t - 1.0).abs() < 1e-3), "{n}→{m}: {total:?}");
        }
    }
}
