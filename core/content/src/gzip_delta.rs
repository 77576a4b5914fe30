//! Deltas of gzip files through their contents. Two releases of a `.tar.gz`
//! share most of their tar, but deflate scatters any change through the
//! compressed stream, so a delta of the compressed bytes is about as large
//! as the file. When the new file's deflate stream is exactly what zlib
//! makes of its contents at some level (true of files written by zlib
//! users such as Python's `gzip` and `tarfile`), the delta is made between
//! the two contents instead, and the decoder compresses the result again
//! with the same recipe. The recipe is checked when the delta is made; the
//! rebuilt file is checked against the signed manifest like any delta.
//!
//! Layout: the magic `FGZ1`, the zlib level (one byte), the length of the
//! new file's gzip header (u32 little-endian), that header verbatim, the
//! length of the new contents (u64 little-endian), then a zstd patch-from
//! frame turning the old contents into the new. The trailer (CRC-32 and
//! length) follows from the contents.

use std::io::{Read, Write};

use flate2::Compression;

use crate::ContentError;
use crate::file_delta::{MAX_DELTA_FILE, decode_plain, encode_plain};

pub(crate) const MAGIC: &[u8; 4] = b"FGZ1";

/// A single-member gzip file: its header and its deflate stream (the
/// trailer follows from the contents).
struct Gzip<'a> {
    header: &'a [u8],
    deflated: &'a [u8],
}

/// Splits a gzip file (RFC 1952) into header, deflate stream and trailer,
/// if it is one. The end of the deflate stream is found by inflating it,
/// which also yields the contents (at most `limit` bytes).
fn split(data: &[u8], limit: u64) -> Option<(Gzip<'_>, Vec<u8>)> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if data.len() < 18 || data[..3] != [0x1f, 0x8b, 8] || data[3] & 0xe0 != 0 {
        return None;
    }
    let flags = data[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let rest = data.get(at..)?;
    let mut inflater = flate2::read::DeflateDecoder::new(rest);
    let mut contents = Vec::new();
    (&mut inflater)
        .take(limit + 1)
        .read_to_end(&mut contents)
        .ok()?;
    if contents.len() as u64 > limit {
        return None;
    }
    let used = inflater.total_in() as usize;
    // Exactly one member: the trailer ends the file.
    let (deflated, trailer) = rest.split_at_checked(used)?;
    if trailer.len() != 8 || trailer[4..] != (contents.len() as u32).to_le_bytes() {
        return None;
    }
    let mut crc = flate2::Crc::new();
    crc.update(&contents);
    if trailer[..4] != crc.sum().to_le_bytes() {
        return None;
    }
    Some((
        Gzip {
            header: &data[..at],
            deflated,
        },
        contents,
    ))
}

/// Raw deflate of `contents` at zlib `level`, as zlib makes it (window 15,
/// memory level 8, default strategy).
fn deflate(contents: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(contents.len() / 3),
        Compression::new(level),
    );
    encoder
        .write_all(contents)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// The zlib levels worth trying for a header's XFL byte (2: best, 4:
/// fastest, as zlib users write it).
fn candidate_levels(header: &[u8]) -> &'static [u32] {
    match header[8] {
        2 => &[9],
        4 => &[1],
        _ => &[6],
    }
}

/// A delta of `new` against `base` through their contents, if both are
/// gzip files and zlib remakes `new`'s deflate stream exactly; `None`
/// otherwise (the caller makes a plain delta).
pub(crate) fn encode(base: &[u8], new: &[u8], zstd_level: i32) -> Option<Vec<u8>> {
    // Neither is inflated unless both look like gzip.
    if !(base.starts_with(&[0x1f, 0x8b]) && new.starts_with(&[0x1f, 0x8b])) {
        return None;
    }
    let (_, old_contents) = split(base, MAX_DELTA_FILE)?;
    let (gz, contents) = split(new, MAX_DELTA_FILE)?;
    let level = candidate_levels(gz.header)
        .iter()
        .copied()
        .find(|&level| deflate(&contents, level) == gz.deflated)?;
    let inner = encode_plain(&old_contents, &contents, zstd_level).ok()?;
    let mut out = Vec::with_capacity(17 + gz.header.len() + inner.len());
    out.extend_from_slice(MAGIC);
    out.push(level as u8);
    out.extend_from_slice(&(gz.header.len() as u32).to_le_bytes());
    out.extend_from_slice(gz.header);
    out.extend_from_slice(&(contents.len() as u64).to_le_bytes());
    out.extend_from_slice(&inner);
    Some(out)
}

/// Rebuilds a gzip file from a delta made by [`encode`] and the `base` it
/// was made against, refusing output past `limit` bytes.
pub(crate) fn decode(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, ContentError> {
    let corrupt =
        |m: &str| ContentError::InvalidDelta(format!("the gzip file delta is corrupt: {m}"));
    let rest = delta
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("no FGZ1"))?;
    let (&level, rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    if !(1..=9).contains(&level) {
        return Err(corrupt("its zlib level is outside 1-9"));
    }
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("truncated"))?;
    let (header, rest) = rest
        .split_at_checked(u32::from_le_bytes(*len) as usize)
        .ok_or_else(|| corrupt("truncated header"))?;
    if header.len() as u64 > limit {
        return Err(corrupt("its header is larger than the file"));
    }
    let (len, inner) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("truncated"))?;
    let contents_len = u64::from_le_bytes(*len);
    // Deflate compresses at most about 1032:1: more contents than that
    // cannot make a file within the limit.
    let most = limit.saturating_mul(1032).min(MAX_DELTA_FILE);
    if contents_len > most {
        return Err(ContentError::TooLarge {
            what: "gzip file contents".into(),
            limit: most,
        });
    }
    let (_, old_contents) =
        split(base, MAX_DELTA_FILE).ok_or_else(|| corrupt("its base is not a gzip file"))?;
    let contents = decode_plain(&old_contents, inner, contents_len)?;
    if contents.len() as u64 != contents_len {
        return Err(corrupt("the contents have the wrong length"));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&contents);
    let mut out = header.to_vec();
    out.extend_from_slice(&deflate(&contents, u32::from(level)));
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(contents_len as u32).to_le_bytes());
    if out.len() as u64 > limit {
        return Err(ContentError::TooLarge {
            what: "decoded file delta".into(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text that compresses about as well as source code and changes a
    /// little between versions.
    fn contents(version: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 997 == 0 { version } else { 1 };
            writeln!(
                out,
                "let v{} = f{}(x{}, {v});",
                x % 5000,
                x % 300,
                (x >> 20) % 40
            )
            .unwrap();
        }
        out
    }

    /// A gzip file as a zlib user writes it: header with a name and XFL 2,
    /// level 9.
    fn gzip(contents: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 2, 3];
        out.extend_from_slice(b"app.tar\0");
        out.extend_from_slice(&deflate(contents, 9));
        let mut crc = flate2::Crc::new();
        crc.update(contents);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(contents.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn a_changed_gzip_file_costs_about_its_changed_contents() {
        let (old, new) = (gzip(&contents(1)), gzip(&contents(2)));
        let plain = encode_plain(&old, &new, 12).unwrap();
        let delta = encode(&old, &new, 12).expect("a zlib-made gzip file");
        assert!(
            delta.len() * 4 < plain.len(),
            "through the contents {} bytes, plain {}",
            delta.len(),
            plain.len()
        );
        assert_eq!(decode(&old, &delta, new.len() as u64).unwrap(), new);
        // Bounded, and a wrong base does not rebuild the file.
        assert!(decode(&old, &delta, new.len() as u64 - 1).is_err());
        let other = gzip(b"another file");
        assert!(decode(&other, &delta, new.len() as u64).map_or(true, |d| d != new));
        assert!(decode(&contents(1), &delta, new.len() as u64).is_err());
    }

    #[test]
    fn files_zlib_does_not_remake_or_that_are_not_gzip_get_no_recipe() {
        let old = gzip(&contents(1));
        // Level 1 in a header that claims level 9.
        let mut odd = gzip(&contents(2));
        let body = deflate(&contents(2), 1);
        odd.splice(18..odd.len() - 8, body);
        assert!(split(&odd, MAX_DELTA_FILE).is_some());
        assert!(encode(&old, &odd, 12).is_none());
        // Not gzip, and two members.
        assert!(encode(&old, &contents(2), 12).is_none());
        let two = [gzip(b"a"), gzip(b"b")].concat();
        assert!(split(&two, MAX_DELTA_FILE).is_none());
    }

    #[test]
    fn a_gzip_file_written_by_python_is_remade_exactly() {
        // Written by Python's gzip module (zlib, level 9, mtime 0) from
        // the text below; the fixture pins zlib's output.
        let made = include_bytes!("../tests/fixtures/python.txt.gz");
        let (gz, contents) = split(made, MAX_DELTA_FILE).expect("a gzip file");
        assert!(contents.starts_with(b"Ferry fixture"));
        assert_eq!(deflate(&contents, 9), gz.deflated);
    }
}
