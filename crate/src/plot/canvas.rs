//! The bitmap every figure is drawn on: plotters' `BitMapBackend` with its text drawing replaced.
//!
//! plotters 0.3.7 draws each glyph (feature `ab_glyph`) at the left edge of its ink instead of at
//! its origin plus the side bearing, so letters sit unevenly: "San dal", "Sn eaker". This backend
//! delegates everything to `BitMapBackend` and draws text itself, placing every glyph at its
//! origin, with kerning, anti-aliased. Sizes and anchors keep plotters' conventions (its layout box
//! and baseline), so charts lay out exactly as before.

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind, FontStyle,
};

pub struct Canvas<'a>(pub BitMapBackend<'a>);

fn font(style: FontStyle) -> Option<FontRef<'static>> {
    let bytes = match style {
        FontStyle::Bold => dejavu::sans::bold(),
        _ => dejavu::sans::regular(),
    };
    FontRef::try_from_slice(bytes).ok()
}

/// Each glyph of `text` at `size` with its origin's x (advances and kerning), and the width of the whole.
fn layout(font: &FontRef<'_>, size: f32, text: &str) -> (Vec<(ab_glyph::GlyphId, f32)>, f32) {
    let scaled = font.as_scaled(size);
    let mut glyphs = Vec::with_capacity(text.len());
    let mut caret = 0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        glyphs.push((id, caret));
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    (glyphs, caret)
}

/// Calls `ink(x, y, coverage)` for every pixel of `text` drawn from `(0, 0)` (plotters' baseline
/// convention: glyph tops at `size / 2 + bounds.min.y`).
pub(crate) fn glyph_pixels(font: &FontRef<'_>, size: f32, text: &str, mut ink: impl FnMut(i32, i32, f32)) {
    for (id, caret) in layout(font, size, text).0 {
        let glyph = id.with_scale_and_position(size, ab_glyph::point(caret, 0.0));
        if let Some(outline) = font.outline_glyph(glyph) {
            let b = outline.px_bounds();
            let (x0, y0) = (b.min.x as i32, (size / 2.0 + b.min.y) as i32);
            outline.draw(|x, y, cov| ink(x0 + x as i32, y0 + y as i32, cov));
        }
    }
}

/// The width in pixels of `text` at `size` (advances and kerning), as drawn by this backend.
pub(crate) fn text_width(size: f32, text: &str) -> i32 {
    font(FontStyle::Normal).map_or(0, |font| layout(&font, size, text).1.ceil() as i32)
}

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(p, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(a, b, s)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, s)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, s)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let Some(font) = font(style.style()) else {
            return Err(DrawingErrorKind::FontError(Box::new(std::fmt::Error)));
        };
        // Anchor as plotters does, from its layout box (advance widths and kerning, like ours).
        let ((min_x, min_y), (max_x, max_y)) =
            style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let mut result = Ok(());
        glyph_pixels(&font, style.size() as f32, text, |x, y, cov| {
            let (x, y) = transform.transform(x + dx - min_x, y + dy - min_y);
            let ink = BackendColor { alpha: color.alpha * cov.clamp(0.0, 1.0) as f64, rgb: color.rgb };
            if result.is_ok() && ink.alpha > 0.0 {
                result = self.0.draw_pixel((pos.0 + x, pos.1 + y), ink);
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ink columns of `text` drawn at `size`.
    fn ink_columns(text: &str, size: f32) -> Vec<bool> {
        let mut cols = vec![false; (text_width(size, text) + size as i32) as usize];
        glyph_pixels(&font(FontStyle::Normal).unwrap(), size, text, |x, _, cov| {
            if cov > 0.5 && x >= 0 && (x as usize) < cols.len() {
                cols[x as usize] = true;
            }
        });
        cols
    }

    #[test]
    fn a_glyph_starts_at_its_side_bearing() {
        // DejaVu Sans "I": left side bearing 201/2048 em — 10 px at 100 px. plotters' own drawing
        // put the ink at 0.
        let font = font(FontStyle::Normal).unwrap();
        let scaled = font.as_scaled(100.0);
        let bearing = scaled.h_side_bearing(scaled.glyph_id('I'));
        assert!(bearing > 5.0, "{bearing}");
        let first = ink_columns("I", 100.0).iter().position(|&c| c).unwrap() as f32;
        assert!((first - bearing).abs() <= 1.0, "ink starts at {first}, the bearing is {bearing}");
    }

    #[test]
    fn letters_of_a_word_are_evenly_spaced() {
        // "Sandal" at 40 px: the blank gaps between letters are all narrow (plotters' drawing left a
        // gap of a third of an em after "n": "San dal").
        let cols = ink_columns("Sandal", 40.0);
        let (first, last) = (cols.iter().position(|&c| c).unwrap(), cols.iter().rposition(|&c| c).unwrap());
        let mut gaps = vec![];
        let mut gap = 0;
        for &c in &cols[first..=last] {
            if c && gap > 0 {
                gaps.push(gap);
            }
            gap = if c { 0 } else { gap + 1 };
        }
        assert!(gaps.iter().max().unwrap() - gaps.iter().min().unwrap() <= 3, "uneven gaps {gaps:?}");
    }
}
