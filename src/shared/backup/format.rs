//! The stored form of an etcd backup: envelope format 2, the chunked
//! sibling of the secrets' format 1 (README.md, "Backups at rest").
//!
//! A snapshot can be gigabytes, so it is sealed and opened as a stream, one
//! chunk at a time, never whole in memory (the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár, as RustCrypto's `aead::stream`
//! builds it: a per-object nonce prefix, a chunk counter and a last-chunk
//! flag in each nonce, so chunks cannot be reordered, dropped, or the
//! stream cut short without failing).
//!
//! ```text
//! offset   size  field
//! 0        8     magic "NBSECRET"
//! 8        1     format version: 2
//! 9        2     n: length of the encrypted data key (big-endian)
//! 11       n     the data key as KMS GenerateDataKey returned it
//! 11+n     7     nonce prefix (random)
//! 18+n     4     chunk size c in bytes (big-endian)
//! 22+n     4     m: length of the metadata (big-endian)
//! 26+n     m     metadata: JSON (revision, members, etcd version, time, SHA-256)
//! 26+n+m   ..    chunks: each c bytes of plaintext sealed with AES-256-GCM
//!                (c + 16 bytes), the last one shorter (possibly empty)
//! ```
//!
//! Chunk `i`'s nonce is `prefix || i (u32 big-endian) || last (1 byte: 1 for
//! the final chunk, else 0)`; its associated data is the whole header
//! followed by the encryption context (as in format 1), so the metadata is
//! authenticated with every chunk.

use std::io::{BufRead, Read, Write};

use aes_gcm::aead::{AeadInOut, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;

use crate::shared::secrets::format::MAGIC;
use crate::shared::secrets::Secret;

pub const VERSION: u8 = 2;
/// Plaintext bytes per chunk: memory use while sealing or opening is about this.
pub const CHUNK_BYTES: u32 = 1024 * 1024;
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// The largest metadata block a reader accepts.
const MAX_METADATA: u32 = 64 * 1024;
/// The largest chunk a reader accepts (a header could claim anything).
const MAX_CHUNK: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("not a nodeboot envelope (no NBSECRET magic)")]
    NotAnEnvelope,
    #[error("envelope format version {0} is not a backup (backups are version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("the envelope is cut short")]
    Truncated,
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("authentication failed in chunk {chunk}: the object was changed, cut short, or belongs to another environment or key")]
    Authentication { chunk: u32 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The parsed header: what is needed to unwrap the key and open the chunks.
#[derive(Debug, Clone)]
pub struct Header {
    bytes: Vec<u8>,
    pub encrypted_key: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk: u32,
    pub metadata: Vec<u8>,
}

fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

fn cipher(data_key: &Secret) -> Result<Aes256Gcm, StreamError> {
    Aes256Gcm::new_from_slice(data_key.expose()).map_err(|_| StreamError::Authentication { chunk: 0 })
}

/// Reads up to `buf.len()` bytes; fewer only at end of input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn at_end(r: &mut impl BufRead) -> std::io::Result<bool> {
    Ok(r.fill_buf()?.is_empty())
}

/// Seals everything `input` yields into `output`; returns the bytes written.
/// `aad_context` is the encryption context as associated data.
pub fn seal(
    data_key: &Secret,
    encrypted_key: &[u8],
    aad_context: &[u8],
    metadata: &[u8],
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<u64, StreamError> {
    seal_with_chunk(
        data_key,
        encrypted_key,
        aad_context,
        metadata,
        CHUNK_BYTES,
        input,
        output,
    )
}

pub(crate) fn seal_with_chunk(
    data_key: &Secret,
    encrypted_key: &[u8],
    aad_context: &[u8],
    metadata: &[u8],
    chunk: u32,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<u64, StreamError> {
    let key_len = u16::try_from(encrypted_key.len())
        .map_err(|_| StreamError::BadHeader("the encrypted data key is too long".into()))?;
    let meta_len = u32::try_from(metadata.len())
        .ok()
        .filter(|l| *l <= MAX_METADATA)
        .ok_or_else(|| StreamError::BadHeader("metadata too long".into()))?;
    // One data key per object, so a nonce never repeats under a key; a
    // random prefix from the OS keeps that true if keys were ever reused.
    let prefix: [u8; PREFIX_LEN] = Nonce::generate()[..PREFIX_LEN].try_into().expect("7 bytes");
    let mut header = Vec::with_capacity(26 + encrypted_key.len() + metadata.len());
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&key_len.to_be_bytes());
    header.extend_from_slice(encrypted_key);
    header.extend_from_slice(&prefix);
    header.extend_from_slice(&chunk.to_be_bytes());
    header.extend_from_slice(&meta_len.to_be_bytes());
    header.extend_from_slice(metadata);
    output.write_all(&header)?;
    let mut aad = header;
    aad.extend_from_slice(aad_context);
    let cipher = cipher(data_key)?;
    let mut buf = vec![0u8; chunk as usize];
    let mut written = aad.len() as u64 - aad_context.len() as u64;
    let mut counter: u32 = 0;
    loop {
        let n = read_full(input, &mut buf)?;
        let last = n < buf.len() || at_end(input)?;
        let tag = cipher
            .encrypt_inout_detached(&nonce(&prefix, counter, last), &aad, (&mut buf[..n]).into())
            .map_err(|_| StreamError::Authentication { chunk: counter })?;
        output.write_all(&buf[..n])?;
        output.write_all(&tag)?;
        written += (n + TAG_LEN) as u64;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or_else(|| StreamError::BadHeader("more chunks than a counter holds".into()))?;
    }
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(written)
}

/// Reads and checks the header (not yet authenticated: that happens with
/// the first chunk).
pub fn read_header(input: &mut impl Read) -> Result<Header, StreamError> {
    let mut fixed = [0u8; 11];
    if read_full(input, &mut fixed)? < 8 || &fixed[..8] != MAGIC {
        return Err(StreamError::NotAnEnvelope);
    }
    if fixed[8] != VERSION {
        return Err(StreamError::UnsupportedVersion(fixed[8]));
    }
    let key_len = u16::from_be_bytes([fixed[9], fixed[10]]) as usize;
    let mut rest = vec![0u8; key_len + PREFIX_LEN + 8];
    if read_full(input, &mut rest)? < rest.len() {
        return Err(StreamError::Truncated);
    }
    let encrypted_key = rest[..key_len].to_vec();
    let prefix: [u8; PREFIX_LEN] = rest[key_len..key_len + PREFIX_LEN].try_into().expect("7 bytes");
    let chunk = u32::from_be_bytes(
        rest[key_len + PREFIX_LEN..key_len + PREFIX_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let meta_len = u32::from_be_bytes(rest[key_len + PREFIX_LEN + 4..].try_into().expect("4 bytes"));
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(StreamError::BadHeader(format!("chunk size {chunk}")));
    }
    if meta_len > MAX_METADATA {
        return Err(StreamError::BadHeader(format!("metadata of {meta_len} bytes")));
    }
    let mut metadata = vec![0u8; meta_len as usize];
    if read_full(input, &mut metadata)? < metadata.len() {
        return Err(StreamError::Truncated);
    }
    let mut bytes = fixed.to_vec();
    bytes.extend_from_slice(&rest);
    bytes.extend_from_slice(&metadata);
    Ok(Header {
        bytes,
        encrypted_key,
        prefix,
        chunk,
        metadata,
    })
}

/// Opens the chunks after `header` into `output`; returns the plaintext
/// length. On error, `output` holds unauthenticated bytes: the caller
/// writes to a temporary file and discards it.
pub fn open(
    header: &Header,
    data_key: &Secret,
    aad_context: &[u8],
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<u64, StreamError> {
    let cipher = cipher(data_key)?;
    let mut aad = header.bytes.clone();
    aad.extend_from_slice(aad_context);
    let mut buf = vec![0u8; header.chunk as usize + TAG_LEN];
    let mut counter: u32 = 0;
    let mut total = 0u64;
    loop {
        let n = read_full(input, &mut buf)?;
        if n < TAG_LEN {
            return Err(StreamError::Authentication { chunk: counter });
        }
        let last = n < buf.len() || at_end(input)?;
        let (body, tag) = buf[..n].split_at_mut(n - TAG_LEN);
        let tag = Tag::try_from(&*tag).map_err(|_| StreamError::Truncated)?;
        cipher
            .decrypt_inout_detached(&nonce(&header.prefix, counter, last), &aad, body.into(), &tag)
            .map_err(|_| StreamError::Authentication { chunk: counter })?;
        output.write_all(body)?;
        total += body.len() as u64;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or(StreamError::Authentication { chunk: counter })?;
    }
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn key(b: u8) -> Secret {
        Secret::new(vec![b; 32])
    }

    fn sealed(plain: &[u8], chunk: u32) -> Vec<u8> {
        let mut out = Vec::new();
        seal_with_chunk(
            &key(1),
            b"wrapped",
            b"ctx",
            b"{\"r\":1}",
            chunk,
            &mut Cursor::new(plain),
            &mut out,
        )
        .unwrap();
        out
    }

    fn opened(stored: &[u8], k: &Secret, ctx: &[u8]) -> Result<Vec<u8>, StreamError> {
        let mut input = Cursor::new(stored);
        let header = read_header(&mut input)?;
        let mut out = Vec::new();
        open(&header, k, ctx, &mut input, &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_and_around_chunk_boundaries() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let stored = sealed(&plain, 16);
            // A full last chunk carries the last flag itself; only empty input seals one empty chunk.
            let chunks = len.div_ceil(16).max(1);
            assert_eq!(stored.len(), 26 + 7 + 7 + len + chunks * TAG_LEN, "len {len}");
            assert_eq!(opened(&stored, &key(1), b"ctx").unwrap(), plain, "len {len}");
            let mut input = Cursor::new(&stored);
            assert_eq!(read_header(&mut input).unwrap().metadata, b"{\"r\":1}");
        }
    }

    #[test]
    fn every_changed_byte_fails() {
        let stored = sealed(&[5u8; 40], 16);
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            assert!(opened(&bad, &key(1), b"ctx").is_err(), "byte {i} accepted");
        }
    }

    #[test]
    fn a_cut_or_extended_stream_fails_even_at_a_chunk_boundary() {
        let stored = sealed(&[9u8; 48], 16);
        for len in 0..stored.len() {
            assert!(opened(&stored[..len], &key(1), b"ctx").is_err(), "cut to {len}");
        }
        let mut longer = stored.clone();
        longer.extend_from_slice(&[0u8; 16]);
        assert!(opened(&longer, &key(1), b"ctx").is_err());
    }

    #[test]
    fn swapped_chunks_another_key_or_context_fail() {
        let stored = sealed(
            &[1u8; 16].iter().chain([2u8; 16].iter()).copied().collect::<Vec<_>>(),
            16,
        );
        let start = 26 + 7 + 7;
        let mut swapped = stored.clone();
        swapped[start..start + 32].copy_from_slice(&stored[start + 32..start + 64]);
        swapped[start + 32..start + 64].copy_from_slice(&stored[start..start + 32]);
        assert!(matches!(
            opened(&swapped, &key(1), b"ctx"),
            Err(StreamError::Authentication { chunk: 0 })
        ));
        assert!(opened(&stored, &key(2), b"ctx").is_err());
        assert!(opened(&stored, &key(1), b"other").is_err());
    }

    #[test]
    fn a_secret_envelope_is_named_as_another_version() {
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&[1, 0, 0]);
        assert!(matches!(
            read_header(&mut Cursor::new(v1)),
            Err(StreamError::UnsupportedVersion(1))
        ));
        assert!(matches!(
            read_header(&mut Cursor::new(b"SQLite format 3".to_vec())),
            Err(StreamError::NotAnEnvelope)
        ));
    }
}
