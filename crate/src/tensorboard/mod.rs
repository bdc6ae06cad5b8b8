//! TensorBoard event files, written by hand: a file is a sequence of TFRecords (length, masked CRC-32C
//! of the length, data, masked CRC-32C of the data), each holding an `Event` protocol buffer — first
//! `file_version: "brain.Event:2"`, then one event per scalar (`wall_time`, `step`, and a `Summary` with
//! one `Value { tag, simple_value }`). That is all TensorBoard needs to draw scalar curves; the format is
//! tensorflow/core/util/event.proto and tensorflow/core/lib/io/record_writer.cc. Tested by reading the
//! files back with the `tensorboard` Python package. [`tensorboard`] shows them in a notebook while a fit runs
//! (`server.rs`).

mod server;

pub use server::{tensorboard, TensorBoard};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Appends scalar events to one event file.
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<host>` (the name TensorBoard looks for).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let path = dir.join(format!("events.out.tfevents.{}.{host}", now().floor() as u64));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter { path, file: std::io::BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, now());
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        Ok(w)
    }

    /// Writes the scalar `value` of `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<()> {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_fixed32(&mut v, 2, value.to_bits());
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &v);
        let mut event = Vec::new();
        put_double(&mut event, 1, now());
        put_varint_field(&mut event, 2, step as u64);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    /// Pushes what was written to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&rec).map_err(|e| Error::io(&self.path, e))
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field `n` with wire type 0 (varint).
fn put_varint_field(out: &mut Vec<u8>, n: u32, v: u64) {
    put_varint(out, (n as u64) << 3);
    put_varint(out, v);
}

/// Field `n` with wire type 1 (64 bits).
fn put_double(out: &mut Vec<u8>, n: u32, v: f64) {
    put_varint(out, ((n as u64) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Field `n` with wire type 2 (length-delimited).
fn put_bytes(out: &mut Vec<u8>, n: u32, b: &[u8]) {
    put_varint(out, ((n as u64) << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Field `n` with wire type 5 (32 bits).
fn put_fixed32(out: &mut Vec<u8>, n: u32, bits: u32) {
    put_varint(out, ((n as u64) << 3) | 5);
    out.extend_from_slice(&bits.to_le_bytes());
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time through a 256-entry table.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn records_are_framed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("epoch_loss", 1, 0.5).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(&w.path).unwrap();
        // Walk the records: each length and its CRC, then the data and its CRC.
        let (mut at, mut n) = (0, 0);
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()), masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()), masked_crc(data));
            at += 16 + len;
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(bytes.windows(10).any(|w| w == b"epoch_loss"));
    }
}
