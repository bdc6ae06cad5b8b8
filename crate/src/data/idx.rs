//! The IDX file format of (Fashion-)MNIST, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — a magic number `0x0000_08NN` whose last byte is the number of
//! dimensions, then one `u32` per dimension — followed by the `u8` data. Images use magic 2051
//! (3 dimensions: count, rows, columns), labels 2049 (1 dimension: count).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Magic number of an images file (`u8` data, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of a labels file (`u8` data, 1 dimension).
pub const LABELS_MAGIC: u32 = 2049;

/// A parsed IDX file: its dimensions and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// No Fashion-MNIST file is larger than this once decompressed (the training images are 47 MB): a header
/// announcing more is refused before anything is read.
pub const MAX_IDX_BYTES: u64 = 1 << 26;

/// Opens a regular file for reading, transparently decompressing it when it starts with the gzip
/// signature. FIFOs, devices and folders are refused (they may never end).
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, std::io::Error::other("not a regular file (a folder, FIFO or device)")));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    maybe_gz(file, path)
}

/// `r`, decompressed when it starts with the gzip signature.
fn maybe_gz<'a>(mut r: impl Read + 'a, path: &Path) -> Result<Box<dyn Read + 'a>> {
    let mut sig = Vec::with_capacity(2);
    (&mut r).take(2).read_to_end(&mut sig).map_err(|e| Error::io(path, e))?;
    let rest = std::io::Cursor::new(sig.clone()).chain(r);
    Ok(if sig == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(rest)) } else { Box::new(rest) })
}

/// Reads up to `n` more bytes of `r` onto `out`.
fn read_up_to(r: &mut dyn Read, n: u64, out: &mut Vec<u8>, path: &Path) -> Result<()> {
    r.take(n).read_to_end(out).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Error::Gzip { path: path.to_path_buf(), source }
        }
        _ => Error::io(path, source),
    })?;
    Ok(())
}

/// Reads and parses the IDX file at `path` (raw or `.gz`) reading no more than its header announces: a
/// wrong magic number is an error after 4 bytes, a header announcing more than [`MAX_IDX_BYTES`] after
/// the header, and a body longer than announced after one byte too many — a small `.gz` that would
/// decompress to gigabytes never does.
pub fn read_idx(path: &Path, expected_magic: u32) -> Result<Idx> {
    read_idx_from(open_maybe_gz(path)?, expected_magic, path)
}

/// [`read_idx`] from any reader of (already decompressed) IDX bytes; `path` names it in errors.
fn read_idx_from(mut r: impl Read, expected_magic: u32, path: &Path) -> Result<Idx> {
    let r: &mut dyn Read = &mut r;
    let mut bytes = Vec::new();
    read_up_to(r, 4, &mut bytes, path)?;
    if bytes.len() == 4 {
        let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if magic == expected_magic {
            let header = 4 + 4 * (magic & 0xff) as u64;
            read_up_to(r, header - 4, &mut bytes, path)?;
            if bytes.len() as u64 == header {
                let needed = bytes[4..]
                    .chunks_exact(4)
                    .try_fold(1u64, |acc, d| acc.checked_mul(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as u64))
                    .and_then(|body| body.checked_add(header))
                    .unwrap_or(u64::MAX);
                if needed > MAX_IDX_BYTES {
                    return Err(Error::BadDimensions {
                        path: path.to_path_buf(),
                        reason: format!(
                            "the header announces {needed} bytes, more than any Fashion-MNIST file ({MAX_IDX_BYTES})"
                        ),
                    });
                }
                // One byte more than announced is enough to tell a file that is too long.
                read_up_to(r, needed - header + 1, &mut bytes, path)?;
            }
        }
    }
    parse_owned(bytes, expected_magic, path)
}

/// Decompresses `raw` when it is gzip data; returns it unchanged otherwise. Reads everything: for
/// files use [`read_idx`], which stops at what the header announces.
pub fn decompress_if_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| Error::Gzip { path: path.to_path_buf(), source })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes, checking the magic number and that the body has exactly the announced size.
///
/// `path` is only used in error messages. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8], expected_magic: u32, path: &Path) -> Result<Idx> {
    parse_owned(bytes.to_vec(), expected_magic, path)
}

/// [`parse`] taking the bytes, so that the body is moved, not copied.
fn parse_owned(mut bytes: Vec<u8>, expected_magic: u32, path: &Path) -> Result<Idx> {
    let what = if expected_magic == IMAGES_MAGIC { "images" } else { "labels" };
    let truncated = |needed: u64| Error::Truncated { path: path.to_path_buf(), needed, actual: bytes.len() as u64 };
    if bytes.len() < 4 {
        return Err(truncated(4));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(Error::BadMagic { path: path.to_path_buf(), expected: expected_magic, found: magic, what });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header as u64));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    // A header may announce more than any file could hold: saturate instead of overflowing.
    let needed = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .and_then(|body| body.checked_add(header as u64))
        .unwrap_or(u64::MAX);
    let actual = bytes.len() as u64;
    if actual < needed {
        return Err(truncated(needed));
    }
    if actual > needed {
        return Err(Error::BadDimensions {
            path: path.to_path_buf(),
            reason: format!("{} bytes after the {} announced by the header {dims:?}", actual - needed, needed),
        });
    }
    Ok(Idx { dims, data: bytes.split_off(header) })
}

/// Writes an IDX file's bytes (used by tests and fuzzing to make small files).
pub fn encode(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&magic.to_be_bytes());
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Reads stop at what the header announces: a small `.gz` of 64 MiB of zeros (wrong magic), one
    /// whose body runs on past its header's size, and a header announcing gigabytes are all refused
    /// without decompressing them; FIFOs, devices and folders are refused before reading.
    #[test]
    fn reads_are_bounded_by_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let zeros = write("zeros.gz", &gz(&vec![0u8; 1 << 26]));
        assert!(std::fs::metadata(&zeros).unwrap().len() < 1 << 20);
        assert!(matches!(read_idx(&zeros, LABELS_MAGIC), Err(Error::BadMagic { .. })));
        let mut long = encode(LABELS_MAGIC, &[10], &[1; 10]);
        long.extend(vec![0u8; 1 << 26]);
        let e = read_idx(&write("long.gz", &gz(&long)), LABELS_MAGIC).unwrap_err();
        assert!(e.to_string().contains("1 bytes after the 18 announced"), "{e}");
        let huge = encode(IMAGES_MAGIC, &[100_000, 100, 100], &[]);
        let e = read_idx(&write("huge", &huge), IMAGES_MAGIC).unwrap_err();
        assert!(e.to_string().contains("more than any Fashion-MNIST file"), "{e}");
        let good = encode(LABELS_MAGIC, &[3], &[1, 2, 3]);
        assert_eq!(read_idx(&write("good.gz", &gz(&good)), LABELS_MAGIC).unwrap().data, vec![1, 2, 3]);
        assert_eq!(read_idx(&write("good", &good), LABELS_MAGIC).unwrap().dims, vec![3]);
        for odd in [dir.path(), Path::new("/dev/zero")] {
            let e = read_idx(odd, LABELS_MAGIC).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    fn p() -> &'static Path {
        Path::new("mem.idx")
    }

    #[test]
    fn parses_valid_images_and_labels() {
        let img = encode(IMAGES_MAGIC, &[2, 28, 28], &[7u8; 2 * 784]);
        let idx = parse(&img, IMAGES_MAGIC, p()).unwrap();
        assert_eq!(idx.dims, vec![2, 28, 28]);
        assert_eq!(idx.data.len(), 2 * 784);
        let lab = encode(LABELS_MAGIC, &[3], &[0, 9, 4]);
        assert_eq!(parse(&lab, LABELS_MAGIC, p()).unwrap().data, vec![0, 9, 4]);
    }

    #[test]
    fn rejects_wrong_magic_and_short_or_long_bodies() {
        let lab = encode(LABELS_MAGIC, &[3], &[0, 9, 4]);
        assert!(matches!(parse(&lab, IMAGES_MAGIC, p()), Err(Error::BadMagic { found: 2049, expected: 2051, .. })));
        assert!(matches!(parse(&lab[..6], LABELS_MAGIC, p()), Err(Error::Truncated { .. })));
        assert!(matches!(parse(&lab[..10], LABELS_MAGIC, p()), Err(Error::Truncated { needed: 11, .. })));
        let mut long = lab.clone();
        long.push(1);
        assert!(matches!(parse(&long, LABELS_MAGIC, p()), Err(Error::BadDimensions { .. })));
        assert!(matches!(parse(&[], LABELS_MAGIC, p()), Err(Error::Truncated { .. })));
    }

    #[test]
    fn huge_announced_dimensions_are_an_error_not_an_allocation() {
        let img = encode(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]);
        assert!(matches!(parse(&img, IMAGES_MAGIC, p()), Err(Error::Truncated { .. })));
    }

    #[test]
    fn gzip_is_detected_and_truncated_gzip_is_an_error() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let raw = encode(LABELS_MAGIC, &[4], &[1, 2, 3, 4]);
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress_if_gz(gz.clone(), p()).unwrap(), raw);
        assert_eq!(decompress_if_gz(raw.clone(), p()).unwrap(), raw);
        let cut = gz[..gz.len() - 6].to_vec();
        assert!(matches!(decompress_if_gz(cut, p()), Err(Error::Gzip { .. })));
    }

    proptest! {
        // PROPTEST_CASES=N runs longer (a fuzzing session); 2000 cases by default.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]
        /// Arbitrary bytes never panic the parser, and whatever it accepts is self-consistent.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), magic_imgs in any::<bool>()) {
            let magic = if magic_imgs { IMAGES_MAGIC } else { LABELS_MAGIC };
            if let Ok(idx) = parse(&bytes, magic, p()) {
                prop_assert_eq!(idx.dims.iter().product::<usize>(), idx.data.len());
            }
            let _ = decompress_if_gz(bytes, p());
        }

        /// A header with any dimensions followed by a body of any length parses iff the lengths agree.
        #[test]
        fn parse_accepts_exactly_consistent_files(d0 in 0u32..5, d1 in 0u32..5, d2 in 0u32..5, delta in -3i64..3) {
            let want = (d0 * d1 * d2) as i64;
            let n = (want + delta).max(0) as usize;
            let bytes = encode(IMAGES_MAGIC, &[d0, d1, d2], &vec![0u8; n]);
            prop_assert_eq!(parse(&bytes, IMAGES_MAGIC, p()).is_ok(), n as i64 == want);
        }

        /// Structured fuzzing of the whole reader: a valid images or labels file (raw or gzip) is
        /// damaged — cut short, a byte changed (header, body or gzip stream), bytes appended, or the
        /// magic's dimension count changed — and read. It never panics; it accepts only files whose body
        /// matches their header, and an undamaged file gives back exactly its data.
        #[test]
        fn damaged_files_are_errors_never_panics(
            images in any::<bool>(),
            dims in (0u32..6, 0u32..6, 0u32..6),
            gzip in any::<bool>(),
            damage in 0u8..5,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let (magic, dims): (u32, Vec<u32>) = if images { (IMAGES_MAGIC, vec![dims.0, dims.1, dims.2]) } else { (LABELS_MAGIC, vec![dims.0 * dims.1]) };
            let body: Vec<u8> = (0..dims.iter().product::<u32>()).map(|i| (i % 251) as u8).collect();
            let clean = encode(magic, &dims, &body);
            let mut file = if gzip { gz(&clean) } else { clean.clone() };
            match damage {
                0 => {}
                1 => file.truncate(at.index(file.len())),
                2 => { let i = at.index(file.len()); file[i] ^= byte | 1; }
                3 => file.extend(&extra),
                _ => { if gzip { file = gz(&{ let mut c = clean.clone(); c[3] ^= byte | 1; c }) } else { file[3] ^= byte | 1; } }
            }
            let read = maybe_gz(&file[..], p()).and_then(|r| read_idx_from(r, magic, p()));
            if let Ok(idx) = &read {
                prop_assert_eq!(idx.dims.iter().product::<usize>(), idx.data.len());
            }
            if damage == 0 {
                let idx = read.unwrap();
                prop_assert_eq!(idx.data, body);
            } else if damage == 3 && !gzip {
                prop_assert!(read.is_err(), "bytes after the body are refused");
            }
        }
    }
}
