//! Reading and writing IDX files, the format of the MNIST distribution.
//!
//! An IDX file is a big-endian header followed by the raw data:
//!
//! | offset | images (`0x00000803`) | labels (`0x00000801`) |
//! |--------|-----------------------|-----------------------|
//! | 0      | magic number          | magic number          |
//! | 4      | item count            | item count            |
//! | 8      | rows                  | data (one byte each)  |
//! | 12     | columns               |                       |
//! | 16     | data (one byte each)  |                       |
//!
//! Files may be stored raw or gzip-compressed; compression is detected from the gzip magic bytes
//! (`1f 8b`), never from the file name. Offsets in error messages refer to the decompressed
//! content.

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;

/// Magic number of an IDX file holding unsigned-byte images (three dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file holding unsigned-byte labels (one dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

const IMAGES_HEADER_LEN: usize = 16;
const LABELS_HEADER_LEN: usize = 8;

/// How an IDX file is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The IDX bytes as they are.
    None,
    /// gzip at the best compression level, with no file name and a zero timestamp, so the same
    /// content always gives the same bytes.
    Gzip,
}

/// The images of an IDX image file: `count` images of `rows x cols` bytes, stored row-major and
/// one image after the other in `pixels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// `count * rows * cols` pixel bytes.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Builds an image set from its pixels, checking that their number is a whole number of
    /// `rows x cols` images.
    pub fn new(rows: usize, cols: usize, pixels: Vec<u8>) -> Result<Self> {
        if rows == 0 || cols == 0 {
            bail!("IDX images must have at least one row and one column, got {rows}x{cols}");
        }
        let per_image = rows.checked_mul(cols).with_context(|| format!("IDX images of {rows}x{cols} are too large"))?;
        let count = pixels.len() / per_image;
        if count * per_image != pixels.len() {
            bail!(
                "{} pixel bytes are not a whole number of {rows}x{cols} images ({per_image} bytes each)",
                pixels.len()
            );
        }
        Ok(Self { count, rows, cols, pixels })
    }
}

/// Describes a magic number for error messages.
fn describe_magic(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "an IDX image file",
        LABELS_MAGIC => "an IDX label file",
        m if m >> 16 == 0 => "an IDX file of another element type or dimension",
        _ => "not an IDX file",
    }
}

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("IDX file {} does not exist", path.display())
        }
        _ => format!("cannot read IDX file {}", path.display()),
    })?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut out).with_context(|| {
            format!(
                "{}: corrupt or truncated gzip data ({} compressed bytes, {} bytes decompressed before the error)",
                path.display(),
                raw.len(),
                out.len()
            )
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

/// Checks the header length and magic number; `origin` names the source in error messages.
fn check_header(bytes: &[u8], origin: &Path, magic: u32, header_len: usize) -> Result<()> {
    let what = describe_magic(magic);
    if bytes.len() < 4 {
        bail!(
            "{}: {} bytes long, too short to hold the 4-byte magic number of {what} (expected 0x{magic:08x})",
            origin.display(),
            bytes.len()
        );
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        bail!(
            "{}: wrong magic number at byte offset 0: found 0x{found:08x} ({}), expected 0x{magic:08x} ({what})",
            origin.display(),
            describe_magic(found)
        );
    }
    if bytes.len() < header_len {
        bail!(
            "{}: truncated header: {what} needs a {header_len}-byte header, the file has only {} bytes",
            origin.display(),
            bytes.len()
        );
    }
    Ok(())
}

/// Checks that exactly `expected` data bytes follow a `header_len`-byte header.
fn check_data_len(bytes: &[u8], origin: &Path, header_len: usize, expected: usize, what: &str) -> Result<()> {
    let found = bytes.len() - header_len;
    if found < expected {
        bail!(
            "{}: truncated file: expected {expected} bytes of {what} data after the {header_len}-byte header, found {found} (data ends at byte offset {})",
            origin.display(),
            bytes.len()
        );
    }
    if found > expected {
        bail!(
            "{}: {} unexpected trailing bytes from byte offset {}: the header announces {expected} bytes of {what} data",
            origin.display(),
            found - expected,
            header_len + expected
        );
    }
    Ok(())
}

/// Parses the (decompressed) bytes of an IDX image file; `origin` names them in error messages.
pub fn parse_images(bytes: &[u8], origin: &Path) -> Result<IdxImages> {
    check_header(bytes, origin, IMAGES_MAGIC, IMAGES_HEADER_LEN)?;
    let count = be_u32(bytes, 4) as usize;
    let rows = be_u32(bytes, 8) as usize;
    let cols = be_u32(bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        bail!(
            "{}: the header (byte offsets 8..16) announces {rows}x{cols} images; expected at least 1x1",
            origin.display()
        );
    }
    let expected = count.checked_mul(rows).and_then(|n| n.checked_mul(cols)).with_context(|| {
        format!("{}: the header announces {count} images of {rows}x{cols}, too many bytes to address", origin.display())
    })?;
    check_data_len(bytes, origin, IMAGES_HEADER_LEN, expected, &format!("image ({count} x {rows}x{cols})"))?;
    Ok(IdxImages { count, rows, cols, pixels: bytes[IMAGES_HEADER_LEN..].to_vec() })
}

/// Parses the (decompressed) bytes of an IDX label file; `origin` names them in error messages.
pub fn parse_labels(bytes: &[u8], origin: &Path) -> Result<Vec<u8>> {
    check_header(bytes, origin, LABELS_MAGIC, LABELS_HEADER_LEN)?;
    let count = be_u32(bytes, 4) as usize;
    check_data_len(bytes, origin, LABELS_HEADER_LEN, count, &format!("label ({count} labels)"))?;
    Ok(bytes[LABELS_HEADER_LEN..].to_vec())
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzip-compressed.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(&read_maybe_gz(path)?, path)
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzip-compressed.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_maybe_gz(path)?, path)
}

fn u32_field(value: usize, name: &str) -> Result<[u8; 4]> {
    let v = u32::try_from(value).with_context(|| format!("IDX {name} {value} does not fit the 32-bit header field"))?;
    Ok(v.to_be_bytes())
}

/// The bytes of an IDX image file (uncompressed).
pub fn encode_images(images: &IdxImages) -> Result<Vec<u8>> {
    let expected = images.count.checked_mul(images.rows).and_then(|n| n.checked_mul(images.cols));
    if expected != Some(images.pixels.len()) {
        bail!(
            "cannot encode IDX images: {} pixel bytes for {} images of {}x{} (expected count x rows x cols)",
            images.pixels.len(),
            images.count,
            images.rows,
            images.cols
        );
    }
    let mut out = Vec::with_capacity(IMAGES_HEADER_LEN + images.pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    out.extend_from_slice(&u32_field(images.count, "image count")?);
    out.extend_from_slice(&u32_field(images.rows, "row count")?);
    out.extend_from_slice(&u32_field(images.cols, "column count")?);
    out.extend_from_slice(&images.pixels);
    Ok(out)
}

/// The bytes of an IDX label file (uncompressed).
pub fn encode_labels(labels: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(LABELS_HEADER_LEN + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&u32_field(labels.len(), "label count")?);
    out.extend_from_slice(labels);
    Ok(out)
}

/// Writes `bytes` to `path` atomically, gzip-compressed or not.
fn write_encoded(path: &Path, bytes: &[u8], compression: Compression) -> Result<()> {
    zoo_core::atomic::write_atomic(path, |w| {
        match compression {
            Compression::None => w.write_all(bytes)?,
            Compression::Gzip => {
                let mut gz = GzEncoder::new(w, flate2::Compression::best());
                gz.write_all(bytes)?;
                gz.finish()?;
            }
        }
        Ok(())
    })
    .with_context(|| format!("cannot write IDX file {}", path.display()))
}

/// Writes an IDX image file atomically.
pub fn write_images(path: &Path, images: &IdxImages, compression: Compression) -> Result<()> {
    write_encoded(path, &encode_images(images)?, compression)
}

/// Writes an IDX label file atomically.
pub fn write_labels(path: &Path, labels: &[u8], compression: Compression) -> Result<()> {
    write_encoded(path, &encode_labels(labels)?, compression)
}

/// Writes a deterministic gzip-compressed IDX image file atomically.
pub fn write_images_gz(path: &Path, images: &IdxImages) -> Result<()> {
    write_images(path, images, Compression::Gzip)
}

/// Writes a deterministic gzip-compressed IDX label file atomically.
pub fn write_labels_gz(path: &Path, labels: &[u8]) -> Result<()> {
    write_labels(path, labels, Compression::Gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_images() -> IdxImages {
        let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
        IdxImages::new(4, 5, pixels).unwrap()
    }

    #[test]
    fn images_and_labels_round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample_images();
        let labels = vec![3u8, 1, 4];
        for (name, compression) in [("raw", Compression::None), ("gz", Compression::Gzip)] {
            let ip = dir.path().join(format!("images-{name}"));
            let lp = dir.path().join(format!("labels-{name}"));
            write_images(&ip, &images, compression).unwrap();
            write_labels(&lp, &labels, compression).unwrap();
            let bytes = std::fs::read(&ip).unwrap();
            assert_eq!(bytes.starts_with(&GZIP_MAGIC), compression == Compression::Gzip);
            assert_eq!(read_images(&ip).unwrap(), images);
            assert_eq!(read_labels(&lp).unwrap(), labels);
        }
    }

    #[test]
    fn compression_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample_images();
        // gzip content under a name without .gz, raw content under a name with .gz
        let gz_named_raw = dir.path().join("images.gz");
        let raw_named_gz = dir.path().join("images-idx3-ubyte");
        write_images(&gz_named_raw, &images, Compression::None).unwrap();
        write_images(&raw_named_gz, &images, Compression::Gzip).unwrap();
        assert_eq!(read_images(&gz_named_raw).unwrap(), images);
        assert_eq!(read_images(&raw_named_gz).unwrap(), images);
    }

    #[test]
    fn gzip_output_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.gz");
        let b = dir.path().join("b.gz");
        write_images_gz(&a, &sample_images()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_images_gz(&b, &sample_images()).unwrap();
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }

    #[test]
    fn wrong_magic_names_found_expected_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let lp = dir.path().join("labels.idx");
        write_labels_gz(&lp, &[1, 2, 3]).unwrap();
        let err = format!("{:#}", read_images(&lp).unwrap_err());
        assert!(err.contains("found 0x00000801"), "{err}");
        assert!(err.contains("expected 0x00000803"), "{err}");
        assert!(err.contains("labels.idx"), "{err}");
        assert!(err.contains("label file"), "{err}");

        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello world, not idx").unwrap();
        let err = format!("{:#}", read_labels(&junk).unwrap_err());
        assert!(err.contains("found 0x68656c6c"), "{err}");
        assert!(err.contains("expected 0x00000801"), "{err}");
    }

    #[test]
    fn truncated_files_report_expected_and_found_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample_images();
        let mut bytes = encode_images(&images).unwrap();
        bytes.truncate(bytes.len() - 10);
        let p = dir.path().join("short");
        std::fs::write(&p, &bytes).unwrap();
        let err = format!("{:#}", read_images(&p).unwrap_err());
        assert!(err.contains("truncated"), "{err}");
        assert!(err.contains("expected 60 bytes"), "{err}");
        assert!(err.contains("found 50"), "{err}");
        assert!(err.contains("short"), "{err}");

        // A header cut short.
        std::fs::write(&p, &bytes[..10]).unwrap();
        let err = format!("{:#}", read_images(&p).unwrap_err());
        assert!(err.contains("16-byte header"), "{err}");

        // Labels with extra bytes at the end.
        let mut labels = encode_labels(&[1, 2]).unwrap();
        labels.push(9);
        std::fs::write(&p, &labels).unwrap();
        let err = format!("{:#}", read_labels(&p).unwrap_err());
        assert!(err.contains("trailing"), "{err}");
        assert!(err.contains("offset 10"), "{err}");

        // A gzip stream cut in the middle.
        let gz = dir.path().join("cut.gz");
        write_images_gz(&gz, &images).unwrap();
        let mut gz_bytes = std::fs::read(&gz).unwrap();
        gz_bytes.truncate(gz_bytes.len() / 2);
        std::fs::write(&gz, &gz_bytes).unwrap();
        let err = format!("{:#}", read_images(&gz).unwrap_err());
        assert!(err.contains("gzip"), "{err}");
        assert!(err.contains("cut.gz"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = format!("{:#}", read_labels(Path::new("/nonexistent/dir/labels-idx1-ubyte")).unwrap_err());
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("/nonexistent/dir/labels-idx1-ubyte"), "{err}");
    }

    #[test]
    fn inconsistent_pixels_are_rejected() {
        assert!(IdxImages::new(4, 5, vec![0; 21]).is_err());
        assert!(IdxImages::new(0, 5, vec![]).is_err());
        let bad = IdxImages { count: 2, rows: 2, cols: 2, pixels: vec![0; 7] };
        assert!(encode_images(&bad).is_err());
    }
}
