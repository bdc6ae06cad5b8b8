//! One error type for everything a user can get wrong: files, arguments, weights, training.
//!
//! Every message says what went wrong *and* what to do about it.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of the places searched holds the four Fashion-MNIST files (and no download was possible).
    #[error(
        "Fashion-MNIST not found. Searched:\n{searched}\nFix: `sudo apt-get install dataset-fashion-mnist` \
         (Debian/Ubuntu), or run `cargo run --release -p fashion -- download` (calls `fashion::data::download()`) \
         to fetch the four files into data/fashion-mnist/, or set FASHION_MNIST_DIR to a folder holding them.{cause}",
        searched = .searched.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n"),
        cause = .download_error.as_ref().map(|e| format!("\nThe automatic download failed too: {e}")).unwrap_or_default()
    )]
    DatasetNotFound { searched: Vec<PathBuf>, download_error: Option<Box<Error>> },

    /// `FASHION_MNIST_DIR` names a folder that lacks some of the four files (no silent fallback).
    #[error(
        "FASHION_MNIST_DIR={dir} lacks {missing}. Fix: point FASHION_MNIST_DIR at the folder holding the four \
         files (raw or .gz), or unset it to use data/fashion-mnist/ or the system copy"
    )]
    DatasetDirIncomplete { dir: PathBuf, missing: String },

    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}. Fix: check that the path exists and is readable/writable")]
    Io { path: PathBuf, source: std::io::Error },

    /// A `.gz` file that does not decompress (cut short or damaged).
    #[error(
        "{path} is not a valid gzip file ({source}): it is truncated or corrupt. \
         Fix: delete it and download it again (`fashion download`), or reinstall `dataset-fashion-mnist`"
    )]
    Gzip { path: PathBuf, source: std::io::Error },

    /// The first four bytes of an IDX file are not the expected magic number.
    #[error(
        "{path}: wrong magic number {found} (expected {expected}: {what}). \
         Fix: the file is not a Fashion-MNIST {what} file; check the file name or download it again"
    )]
    BadMagic { path: PathBuf, expected: u32, found: u32, what: &'static str },

    /// The IDX header is shorter than it claims, or the body is shorter than the header says.
    #[error(
        "{path}: truncated IDX file: {needed} bytes needed, {actual} present. \
         Fix: the file was cut short; delete it and download it again"
    )]
    Truncated { path: PathBuf, needed: u64, actual: u64 },

    /// The IDX file has data after its last item, or the dimensions are not 28×28.
    #[error("{path}: {reason}. Fix: use the original Fashion-MNIST files")]
    BadDimensions { path: PathBuf, reason: String },

    /// Image and label files disagree on the number of samples.
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels. \
         Fix: the two files come from different sets (train vs t10k?) or one is damaged; download both again"
    )]
    CountMismatch { images: PathBuf, labels: PathBuf, n_images: usize, n_labels: usize },

    /// A label is not one of the ten classes.
    #[error(
        "{path}: label {label} at index {index} is out of range (classes are 0..=9). \
         Fix: the label file is corrupt or not a Fashion-MNIST file; download it again"
    )]
    LabelOutOfRange { path: PathBuf, index: usize, label: u8 },

    /// A downloaded (or verified) file does not have the published content.
    #[error(
        "{path}: checksum mismatch: SHA-256 of the decompressed content is {actual}, expected {expected}. \
         Fix: the download is damaged or the mirror serves other data; the file was not kept, try again \
         or set FASHION_MNIST_URL to another mirror"
    )]
    Checksum { path: PathBuf, expected: String, actual: String },

    /// The HTTP transfer failed.
    #[error("download of {url} failed: {reason}. Fix: check the network or set FASHION_MNIST_URL to a mirror")]
    Download { url: String, reason: String },

    /// A caller passed an argument that cannot work (images of the wrong shape, an index past the
    /// data, …); the message says which and what would work.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A setting of `fit` or of an optimizer that cannot work (`epochs: 0`, a negative learning rate, …).
    #[error("{setting}: {reason}")]
    Setting { setting: &'static str, reason: String },

    /// `fit` before `compile`.
    #[error(
        "the model has no optimizer yet. Fix: call model.compile(Adam::default()) (or another optimizer) before fit()"
    )]
    NotCompiled,

    /// A label that is not one of the ten classes, in labels given to `fit`, `evaluate` or a metric.
    #[error("label {label} at index {index} is not a class. Fix: labels are the class numbers 0..=9 (CLASS_NAMES)")]
    Label { index: usize, label: u8 },

    /// A file this crate wrote (a run's `run.json` or `history.csv`) that no longer reads.
    #[error("{path} is damaged: {reason}. Fix: delete the run's folder and log the run again")]
    Corrupt { path: PathBuf, reason: String },

    /// Arrays whose shapes do not fit together.
    #[error("array shape: {0}")]
    Shape(#[from] ndarray::ShapeError),

    /// The loss became NaN or infinite while fitting.
    #[error(
        "loss became {loss} at epoch {epoch}, batch {batch}: training diverged. \
         Fix: lower the learning rate (e.g. Adam {{ learning_rate: 1e-4, ..Adam::default() }}) or check that the images are normalized to [0, 1]"
    )]
    NonFiniteLoss { epoch: usize, batch: usize, loss: f32 },

    /// A weights file that does not fit the model it is loaded into.
    #[error(
        "{path}: these weights do not fit the `{model}` model: {reason}. \
         Fix: load them into the network type they were trained with"
    )]
    WeightsMismatch { path: PathBuf, model: String, reason: String },

    /// A weights file that cannot be read or written.
    #[error("{path}: {reason}. Fix: check the path; weights are written by `fit` + `save` (model.safetensors)")]
    Weights { path: PathBuf, reason: String },

    /// A picture given to `data::load_image` that cannot become a model input: empty, not a PNG or
    /// JPEG, cut short, too large to decode safely, or one plain colour.
    #[error("cannot read {path} as a picture: {reason}. Fix: {fix}")]
    Image { path: PathBuf, reason: String, fix: &'static str },

    /// The TensorBoard server shown in a notebook could not be started.
    #[error("TensorBoard: {reason}")]
    TensorBoard { reason: String },

    /// Drawing or encoding a figure failed.
    #[error("plotting failed: {0}")]
    Plot(String),

    /// The compute device reported an error (out of memory, CUDA failure, …).
    #[error("the compute device failed: {source}. Fix: a smaller batch_size if memory ran out")]
    Device {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A network type whose layers do not fit the images (a shape the compiler cannot check, such as
    /// the `N` of `Flatten<N>`).
    #[error("the network {network} does not fit (batch, 28, 28) images: {reason}")]
    Network { network: String, reason: String },

    /// Building a table failed.
    #[error("table: {0}")]
    Table(#[from] polars::prelude::PolarsError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
