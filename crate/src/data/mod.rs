//! Step 1 of the guide — **import the dataset** — the Rust counterpart of
//! `keras.datasets.fashion_mnist.load_data()`.
//!
//! ```no_run
//! let data = fashion::data::load_data()?;
//! println!("{}", data.source.display());                 // where the files were found
//! assert_eq!(data.train.images.shape(), &[60000, 28, 28]); // u8, 0..=255
//! let train_images = fashion::data::normalize(&data.train.images); // f32 in [0, 1]
//! # Ok::<(), fashion::Error>(())
//! ```
//!
//! The files are looked for, in order, in `$FASHION_MNIST_DIR`, in `data/fashion-mnist/` of this workspace
//! and in `/usr/share/datasets/fashion-mnist/` (Debian package `dataset-fashion-mnist`). When none has
//! them, the four official files are downloaded into `data/fashion-mnist/` and verified.

mod batch;
mod download;
pub mod idx;
mod image;

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3, Axis};

pub use batch::{sample_indices, BatchOrder, Batches, LastBatch};

pub use self::image::{image_from_bytes, load_image, shop_picture, MAX_FILE_BYTES, MAX_SIDE};

pub use download::{
    clean_up_interrupted, download, download_from, download_with, FileSpec, Limits, DEFAULT_BASE_URL, FILES,
};

use crate::error::{Error, Result};

/// The ten classes, indexed by label.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Number of classes.
pub const NUM_CLASSES: usize = 10;
/// Image side in pixels.
pub const SIDE: usize = 28;

/// Names of the four files, as `(images, labels)` for train and test (each may also end in `.gz`).
pub const TRAIN_FILES: (&str, &str) = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
pub const TEST_FILES: (&str, &str) = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");

/// One split: `images` is `(n, 28, 28)` of raw `u8` pixels, `labels` is `(n,)` with values `0..=9`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub images: Array3<u8>,
    pub labels: Array1<u8>,
}

/// [`Error::Label`] for the first label that is not a class.
pub(crate) fn check_labels<'a>(labels: impl IntoIterator<Item = &'a u8>) -> Result<()> {
    match labels.into_iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
        Some((index, &label)) => Err(Error::Label { index, label }),
        None => Ok(()),
    }
}

/// What [`load_data`] returns: both splits and the folder they were read from.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    pub train: Dataset,
    pub test: Dataset,
    pub source: PathBuf,
}

impl Dataset {
    /// Builds a dataset, checking that counts agree, images are 28×28 and labels are classes.
    pub fn new(images: Array3<u8>, labels: Array1<u8>) -> Result<Self> {
        if images.len_of(Axis(0)) != labels.len() {
            return Err(Error::InvalidArgument(format!(
                "{} images but {} labels",
                images.len_of(Axis(0)),
                labels.len()
            )));
        }
        if images.shape()[1..] != [SIDE, SIDE] {
            return Err(Error::InvalidArgument(format!("images must be 28×28, got {:?}", &images.shape()[1..])));
        }
        check_labels(&labels)?;
        Ok(Dataset { images, labels })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` samples (all of them, with a note on stderr, when `n` is larger), for quick runs.
    pub fn take(&self, n: usize) -> Dataset {
        if n > self.len() {
            eprintln!("note: asked for {n} images, there are {}: taking all {}", self.len(), self.len());
        }
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice(ndarray::s![..n, .., ..]).to_owned(),
            labels: self.labels.slice(ndarray::s![..n]).to_owned(),
        }
    }

    /// The samples at `indices`, in that order (e.g. a random sample for a figure).
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::InvalidArgument(format!("index {i} out of range for {} samples", self.len())));
        }
        Ok(Dataset { images: self.images.select(Axis(0), indices), labels: self.labels.select(Axis(0), indices) })
    }

    /// Images as `f32` in `[0, 1]` (pixel / 255) — the guide's `train_images / 255.0`.
    pub fn normalized(&self) -> Array3<f32> {
        normalize(&self.images)
    }

    /// How many samples of each class, indexed by label.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

impl FashionMnist {
    /// Images per class in each split: `label, class, train, test`.
    pub fn class_balance(&self) -> Result<polars::prelude::DataFrame> {
        let (tr, te) = (self.train.class_counts(), self.test.class_counts());
        polars::df!(
            "label" => (0..NUM_CLASSES as u32).collect::<Vec<u32>>(),
            "class" => CLASS_NAMES.to_vec(),
            "train" => tr.iter().map(|&c| c as u64).collect::<Vec<u64>>(),
            "test" => te.iter().map(|&c| c as u64).collect::<Vec<u64>>(),
        )
        .map_err(Error::from)
    }

    /// Keeps the first `train` training and `test` test samples (for quick runs and tests).
    pub fn subset(&self, train: usize, test: usize) -> FashionMnist {
        FashionMnist { train: self.train.take(train), test: self.test.take(test), source: self.source.clone() }
    }
}

/// A shape as Python prints it: `(60000, 28, 28)`, `(60000,)`.
pub fn shape_str(shape: &[usize]) -> String {
    let items: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    match items.len() {
        1 => format!("({},)", items[0]),
        _ => format!("({})", items.join(", ")),
    }
}

/// The label → class name table of the guide.
pub fn class_names_table() -> Result<polars::prelude::DataFrame> {
    polars::df!(
        "label" => (0..NUM_CLASSES as u32).collect::<Vec<u32>>(),
        "class" => CLASS_NAMES.to_vec(),
    )
    .map_err(Error::from)
}

/// Pixel values `0..=255` to `f32` in `[0, 1]`: the guide's "divide by 255".
pub fn normalize(images: &Array3<u8>) -> Array3<f32> {
    images.mapv(|p| p as f32 / 255.0)
}

/// The folders searched for the dataset, in order.
pub fn search_paths() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("FASHION_MNIST_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(workspace_data_dir());
    dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
    dirs
}

/// `data/fashion-mnist/` at the root of this workspace (where downloads go).
pub fn workspace_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("data").join("fashion-mnist")
}

/// The path of `name` in `dir`, raw or `.gz`, if it exists (raw wins).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.exists())
}

/// The first searched folder that holds all four files.
pub fn locate() -> Option<PathBuf> {
    search_paths().into_iter().find(|d| has_all_files(d))
}

fn has_all_files(dir: &Path) -> bool {
    [TRAIN_FILES.0, TRAIN_FILES.1, TEST_FILES.0, TEST_FILES.1].iter().all(|f| find_file(dir, f).is_some())
}

/// Loads Fashion-MNIST like `keras.datasets.fashion_mnist.load_data()`.
///
/// Searches [`search_paths`]; when no folder has the files, downloads them into
/// [`workspace_data_dir`] (with a progress bar) and verifies them.
///
/// A set `FASHION_MNIST_DIR` is the only place looked in: a folder lacking a file is an error naming it.
/// A training set smaller than the test set gets a warning (the files may be swapped).
pub fn load_data() -> Result<FashionMnist> {
    load_from(std::env::var_os("FASHION_MNIST_DIR").map(PathBuf::from))
}

/// [`load_data`] with `FASHION_MNIST_DIR` given as `env_dir`.
fn load_from(env_dir: Option<PathBuf>) -> Result<FashionMnist> {
    if let Some(dir) = env_dir {
        let missing: Vec<String> = [TRAIN_FILES.0, TRAIN_FILES.1, TEST_FILES.0, TEST_FILES.1]
            .iter()
            .filter(|f| find_file(&dir, f).is_none())
            .map(|f| format!("{f}(.gz)"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::DatasetDirIncomplete { dir, missing: missing.join(", ") });
        }
        return load_dir(&dir);
    }
    let dir = match locate() {
        Some(dir) => dir,
        None => {
            let target = workspace_data_dir();
            eprintln!("Fashion-MNIST not found locally; downloading into {}", target.display());
            match download(&target) {
                Ok(()) => target,
                Err(e) => {
                    return Err(Error::DatasetNotFound { searched: search_paths(), download_error: Some(Box::new(e)) })
                }
            }
        }
    };
    load_dir(&dir)
}

/// Loads the four files from one folder (raw or `.gz`), validating everything.
pub fn load_dir(dir: &Path) -> Result<FashionMnist> {
    if !has_all_files(dir) {
        return Err(Error::DatasetNotFound { searched: vec![dir.to_path_buf()], download_error: None });
    }
    let data = FashionMnist {
        train: load_split(dir, TRAIN_FILES)?,
        test: load_split(dir, TEST_FILES)?,
        source: dir.to_path_buf(),
    };
    if data.train.len() < data.test.len() {
        eprintln!(
            "warning: {}: the training set ({} images) is smaller than the test set ({}); are the train and test files swapped?",
            dir.display(),
            data.train.len(),
            data.test.len()
        );
    }
    Ok(data)
}

fn load_split(dir: &Path, (images, labels): (&str, &str)) -> Result<Dataset> {
    let missing = |name: &str| Error::DatasetNotFound { searched: vec![dir.join(name)], download_error: None };
    let ip = find_file(dir, images).ok_or_else(|| missing(images))?;
    let lp = find_file(dir, labels).ok_or_else(|| missing(labels))?;
    load_pair(&ip, &lp)
}

/// Loads one images file and one labels file (raw or `.gz`) into a [`Dataset`].
pub fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let img = idx::read_idx(images_path, idx::IMAGES_MAGIC)?;
    let lab = idx::read_idx(labels_path, idx::LABELS_MAGIC)?;
    if img.dims[1..] != [SIDE, SIDE] {
        return Err(Error::BadDimensions {
            path: images_path.to_path_buf(),
            reason: format!("images are {}×{}, expected 28×28", img.dims[1], img.dims[2]),
        });
    }
    let (n_images, n_labels) = (img.dims[0], lab.dims[0]);
    if n_images != n_labels {
        return Err(Error::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images,
            n_labels,
        });
    }
    if let Err(Error::Label { index, label }) = check_labels(&lab.data) {
        return Err(Error::LabelOutOfRange { path: labels_path.to_path_buf(), index, label });
    }
    let images = Array3::from_shape_vec((n_images, SIDE, SIDE), img.data)?;
    Ok(Dataset { images, labels: Array1::from_vec(lab.data) })
}

#[cfg(test)]
mod tests {
    use super::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
    use super::*;

    #[test]
    fn a_set_fashion_mnist_dir_lacking_files_is_an_error_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TRAIN_FILES.0), b"x").unwrap();
        let e = load_from(Some(dir.path().to_path_buf())).unwrap_err().to_string();
        assert!(e.contains(&format!("{}(.gz)", TRAIN_FILES.1)) && e.contains(&format!("{}(.gz)", TEST_FILES.0)), "{e}");
        assert!(!e.contains(&format!("{}(.gz)", TRAIN_FILES.0)), "{e}");
        assert!(e.contains("unset it"), "{e}");
    }
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Writes a tiny dataset: `n` train and `n` test samples, pixels = sample index, label = index % 10.
    fn write_set(dir: &Path, n: u32, compress: bool) {
        let imgs: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n(i as u8, 784)).collect();
        let labs: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for (images, labels) in [TRAIN_FILES, TEST_FILES] {
            let i = encode(IMAGES_MAGIC, &[n, 28, 28], &imgs);
            let l = encode(LABELS_MAGIC, &[n], &labs);
            let (i, l, ext) = if compress { (gz(&i), gz(&l), ".gz") } else { (i, l, "") };
            std::fs::write(dir.join(format!("{images}{ext}")), i).unwrap();
            std::fs::write(dir.join(format!("{labels}{ext}")), l).unwrap();
        }
    }

    #[test]
    fn loads_raw_and_gz_the_same() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_set(dir.path(), 12, compress);
            let d = load_dir(dir.path()).unwrap();
            assert_eq!(d.train.images.shape(), &[12, 28, 28]);
            assert_eq!(d.test.labels.len(), 12);
            assert_eq!(d.train.images[[11, 5, 5]], 11);
            assert_eq!(d.train.labels[11], 1);
            assert_eq!(d.train.class_counts()[0], 2);
        }
    }

    #[test]
    fn every_bad_file_is_its_own_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write_set(p, 5, false);
        let labels = p.join(TRAIN_FILES.1);
        let images = p.join(TRAIN_FILES.0);

        // Label 10.
        std::fs::write(&labels, encode(LABELS_MAGIC, &[5], &[0, 1, 10, 3, 4])).unwrap();
        let e = load_dir(p).unwrap_err();
        assert!(matches!(e, Error::LabelOutOfRange { index: 2, label: 10, .. }), "{e}");
        assert!(e.to_string().contains(TRAIN_FILES.1));

        // Count mismatch.
        std::fs::write(&labels, encode(LABELS_MAGIC, &[4], &[0, 1, 2, 3])).unwrap();
        assert!(matches!(load_dir(p).unwrap_err(), Error::CountMismatch { n_images: 5, n_labels: 4, .. }));

        // Wrong magic: a labels file where the images should be.
        std::fs::write(&labels, encode(LABELS_MAGIC, &[5], &[0, 1, 2, 3, 4])).unwrap();
        std::fs::write(&images, encode(LABELS_MAGIC, &[5], &[0, 1, 2, 3, 4])).unwrap();
        let e = load_dir(p).unwrap_err();
        assert!(matches!(e, Error::BadMagic { found: 2049, .. }), "{e}");
        assert!(e.to_string().contains(TRAIN_FILES.0));

        // Truncated raw body.
        let full = encode(IMAGES_MAGIC, &[5, 28, 28], &[0; 5 * 784]);
        std::fs::write(&images, &full[..full.len() - 100]).unwrap();
        assert!(matches!(load_dir(p).unwrap_err(), Error::Truncated { .. }));

        // Not 28×28.
        std::fs::write(&images, encode(IMAGES_MAGIC, &[5, 2, 2], &[0; 20])).unwrap();
        assert!(matches!(load_dir(p).unwrap_err(), Error::BadDimensions { .. }));

        // Truncated gzip.
        std::fs::remove_file(&images).unwrap();
        let z = gz(&full);
        std::fs::write(p.join(format!("{}.gz", TRAIN_FILES.0)), &z[..z.len() / 2]).unwrap();
        let e = load_dir(p).unwrap_err();
        assert!(matches!(e, Error::Gzip { .. }), "{e}");
        assert!(e.to_string().contains("download it again"));

        // Missing file: the message lists where it looked and how to install.
        std::fs::remove_file(p.join(format!("{}.gz", TRAIN_FILES.0))).unwrap();
        let e = load_dir(p).unwrap_err().to_string();
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn take_select_and_normalize() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 20, true);
        let d = load_dir(dir.path()).unwrap();
        let s = d.subset(7, 3);
        assert_eq!((s.train.len(), s.test.len()), (7, 3));
        let sel = d.train.select(&[3, 0]).unwrap();
        assert_eq!(sel.labels.to_vec(), vec![3, 0]);
        assert!(d.train.select(&[20]).is_err());
        let n = d.train.normalized();
        assert_eq!(n[[0, 0, 0]], 0.0);
        assert!((n[[19, 3, 3]] - 19.0 / 255.0).abs() < 1e-7);
        assert!(n.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn shapes_print_like_python_and_tables_have_ten_rows() {
        assert_eq!(shape_str(&[60000, 28, 28]), "(60000, 28, 28)");
        assert_eq!(shape_str(&[60000]), "(60000,)");
        assert_eq!(class_names_table().unwrap().shape(), (10, 2));
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 20, false);
        let b = load_dir(dir.path()).unwrap().class_balance().unwrap();
        assert_eq!(b.column("train").unwrap().u64().unwrap().get(3), Some(2));
    }

    #[test]
    fn dataset_new_validates() {
        assert!(Dataset::new(Array3::zeros((2, 28, 28)), Array1::from_vec(vec![0, 1])).is_ok());
        assert!(Dataset::new(Array3::zeros((2, 28, 28)), Array1::from_vec(vec![0])).is_err());
        assert!(Dataset::new(Array3::zeros((1, 28, 27)), Array1::from_vec(vec![0])).is_err());
        assert!(Dataset::new(Array3::zeros((1, 28, 28)), Array1::from_vec(vec![10])).is_err());
    }
}
