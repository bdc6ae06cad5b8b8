//! Showing things inline in Jupyter (evcxr kernel) and saving them to files.
//!
//! evcxr shows the value that ends a cell by calling its `evcxr_display()` method, which prints
//! `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT`. A [`Figure`] sends a PNG; a [`Table`] (or a
//! polars `DataFrame`, through [`EvcxrDisplay`]) sends an HTML table. One payload per MIME type per cell:
//! to show several figures from one cell, combine them with [`Html::figures`].

use std::path::Path;

use base64::Engine;
use polars::prelude::*;

use crate::error::{Error, Result};

/// An RGB image (a rendered figure): shows inline in a notebook, saves as PNG.
#[derive(Clone, PartialEq, Eq)]
pub struct Figure {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB bytes, `width * height * 3`.
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figure({}×{})", self.width, self.height)
    }
}

impl Figure {
    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// PNG-encoded bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| Error::Plot(e.to_string()))?;
        w.write_image_data(&self.rgb).map_err(|e| Error::Plot(e.to_string()))?;
        w.finish().map_err(|e| Error::Plot(e.to_string()))?;
        Ok(out)
    }

    /// Writes the PNG to `path` (folders are created), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic(path, &self.to_png()?)
    }

    /// `<img>` tag with the PNG inline.
    pub fn to_html_img(&self) -> String {
        match self.to_png() {
            Ok(png) => format!(
                "<img src=\"data:image/png;base64,{}\" width=\"{}\"/>",
                base64::engine::general_purpose::STANDARD.encode(png),
                self.width
            ),
            Err(e) => format!("<pre>{}</pre>", escape(&e.to_string())),
        }
    }

    /// Shows the figure when it ends a notebook cell.
    pub fn evcxr_display(&self) {
        match self.to_png() {
            Ok(png) => println!(
                "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
                base64::engine::general_purpose::STANDARD.encode(png)
            ),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// A block of HTML shown inline (several figures side by side, a table and a figure, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Html(pub String);

impl Html {
    /// Several figures in one cell output, wrapped in a row.
    pub fn figures(figures: &[&Figure]) -> Html {
        let imgs: Vec<String> = figures.iter().map(|f| f.to_html_img()).collect();
        Html(format!("<div style=\"display:flex;flex-wrap:wrap;gap:8px\">{}</div>", imgs.join("")))
    }

    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.0);
    }
}

/// A DataFrame shown as an HTML table (what a pandas user sees when a cell ends with a DataFrame).
#[derive(Debug, Clone)]
pub struct Table(pub DataFrame);

impl Table {
    /// HTML `<table>` with the column names, dtypes and every row (floats to 4 decimals, nulls blank).
    pub fn to_html(&self) -> String {
        dataframe_html(&self.0)
    }

    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.to_html());
    }
}

/// Lets a cell end with a polars `DataFrame` and get an HTML table (bring it in scope with the prelude).
pub trait EvcxrDisplay {
    fn evcxr_display(&self);
}

impl EvcxrDisplay for DataFrame {
    fn evcxr_display(&self) {
        Table(self.clone()).evcxr_display()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn cell(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::Float32(x) => format!("{x:.4}"),
        AnyValue::Float64(x) => format!("{x:.4}"),
        AnyValue::String(s) => escape(s),
        AnyValue::StringOwned(s) => escape(s.as_str()),
        other => escape(&other.to_string()),
    }
}

/// Renders a DataFrame as an HTML table.
pub fn dataframe_html(df: &DataFrame) -> String {
    let mut h = String::from("<table class=\"dataframe\" style=\"border-collapse:collapse\">\n<thead><tr><th></th>");
    for c in df.columns() {
        h.push_str(&format!(
            "<th style=\"text-align:right;padding:2px 8px\">{}<br/><small>{}</small></th>",
            escape(c.name().as_str()),
            escape(&c.dtype().to_string())
        ));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for i in 0..df.height() {
        h.push_str(&format!("<tr><th style=\"padding:2px 8px\">{i}</th>"));
        for c in df.columns() {
            let v = c.get(i).map(|v| cell(&v)).unwrap_or_default();
            h.push_str(&format!("<td style=\"text-align:right;padding:2px 8px\">{v}</td>"));
        }
        h.push_str("</tr>\n");
    }
    h.push_str(&format!("</tbody></table>\n<p><small>{} rows × {} columns</small></p>", df.height(), df.width()));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_html_contains_values_and_blank_nulls() {
        let df = df!("epoch" => [1u32, 2], "loss" => [0.51234f64, 0.4], "val" => [None, Some(0.875f64)]).unwrap();
        let html = Table(df).to_html();
        assert!(html.contains("<th style=\"text-align:right;padding:2px 8px\">epoch"), "{html}");
        assert!(html.contains(">0.5123<"), "{html}");
        assert!(html.contains(">0.8750<"), "{html}");
        assert!(html.contains("<td style=\"text-align:right;padding:2px 8px\"></td>"), "{html}");
        assert!(html.contains("2 rows × 3 columns"));
    }

    #[test]
    fn png_round_trips() {
        let f = Figure { width: 3, height: 2, rgb: (0..18).map(|i| i as u8 * 10).collect() };
        let png = f.to_png().unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..18], &f.rgb[..]);
        assert!(f.to_html_img().starts_with("<img src=\"data:image/png;base64,"));
        let two = Html::figures(&[&f, &f]).0;
        assert_eq!(two.matches("<img src=\"data:image/png;base64,").count(), 2);
    }
}

/// The first cell of every notebook calls this after `:dep fashion`: panics print one line, and a
/// kernel started in a way that makes training slow (see below) says so and what to do.
///
/// The project's kernel ("Rust (fashion)", `scripts/kernel`) builds in a folder below the project's
/// `.cargo/config.toml`, which optimises the dependencies while cells compile unoptimised. Another
/// Rust kernel (evcxr's own kernel spec, a VS Code default) builds in a temporary folder where the
/// dependencies stay unoptimised — training about 20× slower — and are rebuilt at every start.
pub fn setup_notebook() {
    one_line_panics();
    let folder = std::env::var("EVCXR_TMPDIR").ok().map(|f| project_relative(&f));
    println!("{}", kernel_report(!cfg!(debug_assertions), folder.as_deref()));
}

/// `path` relative to the project root (the folder above this crate) when it lies inside it.
fn project_relative(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/"));
    Path::new(path).strip_prefix(root).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string())
}

/// What [`setup_notebook`] prints, from whether this crate was compiled optimised and the build folder.
pub fn kernel_report(optimised: bool, build_folder: Option<&str>) -> String {
    const FIX: &str = "Choose the kernel \"Rust (fashion)\" (JupyterLab: Kernel > Change Kernel; VS Code: \
                       Select Kernel > Jupyter Kernel > Rust (fashion)) — scripts/setup installs it and \
                       scripts/lab starts JupyterLab with it — then run the notebook again.";
    match (optimised, build_folder) {
        (true, Some(folder)) => {
            format!("fashion {} ready: dependencies optimised, build folder {folder}", env!("CARGO_PKG_VERSION"))
        }
        (true, None) => format!("fashion {} ready: dependencies optimised", env!("CARGO_PKG_VERSION")),
        (false, folder) => format!(
            "WARNING: this kernel compiled the fashion crate unoptimised (build folder: {}), so training runs \
             about 20 times slower, and it rebuilds the dependencies at every start. {FIX}",
            folder.unwrap_or("a temporary folder")
        ),
    }
}

/// Replaces the default panic message — a full backtrace in a notebook kernel, which sets
/// `RUST_BACKTRACE` — with one line and a hint. `let _ = std::panic::take_hook();` in a cell brings the
/// default (with backtrace) back.
///
/// The line goes to stdout: evcxr passes a cell's stdout on before it reports the cell finished, but
/// its stderr from another thread, and on a busy machine Jupyter had already closed the cell's output
/// when the message arrived — the panic then showed nothing at all.
pub fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let place = info.location().map(|l| format!(" {}:{}", l.file(), l.line())).unwrap_or_default();
        println!(
            "panicked at{place}: {message}\n(variables from earlier cells are kept; for the backtrace, run \
             `let _ = std::panic::take_hook();` and this cell again)"
        );
    }));
}

#[cfg(test)]
mod kernel_report_tests {
    use super::kernel_report;

    #[test]
    fn an_unoptimised_kernel_is_named_with_the_fix() {
        let ok = kernel_report(true, Some("/p/target/evcxr/2"));
        assert!(ok.contains("ready: dependencies optimised") && ok.contains("target/evcxr/2"), "{ok}");
        let slow = kernel_report(false, None);
        assert!(
            slow.starts_with("WARNING") && slow.contains("20 times slower") && slow.contains("Rust (fashion)"),
            "{slow}"
        );
        assert!(slow.contains("a temporary folder"), "{slow}");
    }
}
