//! The stored form of an etcd backup: envelope formats 2 and 3, the chunked
//! siblings of the secrets' format 1 (README.md, "Backups at rest").
//!
//! A snapshot can be gigabytes, so it is sealed and opened as a stream, one
//! chunk at a time, never whole in memory (the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár, as RustCrypto's `aead::stream`
//! builds it: a per-object nonce prefix, a chunk counter and a last-chunk
//! flag in each nonce, so chunks cannot be reordered, dropped, or the
//! stream cut short without failing). [`Sealer`] and [`Opener`] take the
//! bytes as they come (from etcd's snapshot stream, from S3's body), so
//! neither the node nor the operator needs a temporary copy to seal or open.
//!
//! ```text
//! offset   size  field
//! 0        8     magic "NBSECRET"
//! 8        1     format version: 3 (2 is still read)
//! 9        2     n: length of the encrypted data key (big-endian)
//! 11       n     the data key as KMS GenerateDataKey returned it
//! 11+n     7     nonce prefix (random)
//! 18+n     4     chunk size c in bytes (big-endian)
//! 22+n     4     m: length of the metadata (big-endian)
//! 26+n     m     metadata: JSON (revision, members, etcd version, time; format
//!                2 also the snapshot's SHA-256 and size)
//! 26+n+m   ..    chunks: each c bytes of plaintext sealed with AES-256-GCM
//!                (c + 16 bytes), the last one shorter (possibly empty)
//! ```
//!
//! Chunk `i`'s nonce is `prefix || i (u32 big-endian) || last (1 byte: 1 for
//! the final chunk, else 0)`; its associated data is the whole header
//! followed by the encryption context (as in format 1), so the metadata is
//! authenticated with every chunk.
//!
//! Format 3 differs only in what the plaintext is: the snapshot followed by a
//! 40-byte trailer, its length (u64 big-endian) and SHA-256, so a backup can
//! be sealed while etcd streams it, before anyone knows its hash. Format 2
//! carried both in the header's metadata, which is why it needed the whole
//! snapshot on disk first.

use std::io::{Read, Write};

use aes_gcm::aead::{AeadInOut, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use sha2::{Digest as _, Sha256};

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;

use crate::shared::secrets::format::MAGIC;
use crate::shared::secrets::Secret;

/// The version new backups are written in.
pub const VERSION: u8 = 3;
/// The version before it: no trailer, the hash in the header. Still opened.
pub const VERSION_2: u8 = 2;
/// Plaintext bytes per chunk: memory use while sealing or opening is about this.
pub const CHUNK_BYTES: u32 = 1024 * 1024;
/// Format 3's trailer: the snapshot's length (u64 big-endian) and SHA-256.
pub const TRAILER_LEN: usize = 8 + 32;
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
const FIXED_LEN: usize = 11;
/// The largest metadata block a reader accepts.
const MAX_METADATA: u32 = 64 * 1024;
/// The largest chunk a reader accepts (a header could claim anything).
const MAX_CHUNK: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("not a nodeboot envelope (no NBSECRET magic)")]
    NotAnEnvelope,
    #[error("envelope format version {0} is not a backup (backups are versions {VERSION_2} and {VERSION})")]
    UnsupportedVersion(u8),
    #[error("the envelope is cut short")]
    Truncated,
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("authentication failed in chunk {chunk}: the object was changed, cut short, or belongs to another environment or key")]
    Authentication { chunk: u32 },
    #[error("the trailer says {want_size} bytes with SHA-256 {want_sha256}, the stream held {size} bytes with SHA-256 {sha256}")]
    Trailer {
        want_size: u64,
        want_sha256: String,
        size: u64,
        sha256: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The parsed header: what is needed to unwrap the key and open the chunks.
#[derive(Debug, Clone)]
pub struct Header {
    bytes: Vec<u8>,
    pub version: u8,
    pub encrypted_key: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk: u32,
    pub metadata: Vec<u8>,
}

impl Header {
    /// Its length in the stored object: where the chunks start.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The plaintext's length and SHA-256 (hex), as sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
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
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
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

/// Seals a stream as it comes: [`Sealer::new`] gives the header, each
/// [`Sealer::update`] appends the chunks it completed, [`Sealer::finish`]
/// the rest (and, in format 3, the trailer). Holds one chunk of plaintext.
pub struct Sealer {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk: usize,
    version: u8,
    /// Plaintext not sealed yet: a chunk is sealed only once a byte after it
    /// arrives, since the last one carries the last flag.
    pending: Vec<u8>,
    counter: u32,
    hasher: Sha256,
    size: u64,
}

impl Sealer {
    /// A format 3 sealer and the header to store first.
    pub fn new(
        data_key: &Secret,
        encrypted_key: &[u8],
        aad_context: &[u8],
        metadata: &[u8],
    ) -> Result<(Sealer, Vec<u8>), StreamError> {
        Sealer::with(data_key, encrypted_key, aad_context, metadata, CHUNK_BYTES, VERSION)
    }

    /// Any chunk size and version 2 or 3 (tests; format 2 as earlier
    /// releases wrote it, its hash in `metadata`).
    pub fn with(
        data_key: &Secret,
        encrypted_key: &[u8],
        aad_context: &[u8],
        metadata: &[u8],
        chunk: u32,
        version: u8,
    ) -> Result<(Sealer, Vec<u8>), StreamError> {
        if version != VERSION && version != VERSION_2 {
            return Err(StreamError::UnsupportedVersion(version));
        }
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(StreamError::BadHeader(format!("chunk size {chunk}")));
        }
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
        header.push(version);
        header.extend_from_slice(&key_len.to_be_bytes());
        header.extend_from_slice(encrypted_key);
        header.extend_from_slice(&prefix);
        header.extend_from_slice(&chunk.to_be_bytes());
        header.extend_from_slice(&meta_len.to_be_bytes());
        header.extend_from_slice(metadata);
        let mut aad = header.clone();
        aad.extend_from_slice(aad_context);
        let sealer = Sealer {
            cipher: cipher(data_key)?,
            aad,
            prefix,
            chunk: chunk as usize,
            version,
            pending: Vec::with_capacity(chunk as usize),
            counter: 0,
            hasher: Sha256::new(),
            size: 0,
        };
        Ok((sealer, header))
    }

    /// Takes more plaintext; appends every chunk it completed to `out`.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.pending.len() == self.chunk {
                self.seal_pending(false, out)?;
            }
            let take = (self.chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the rest as the last chunk (after format 3's trailer); returns
    /// the plaintext's length and SHA-256.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Digest, StreamError> {
        let digest = Digest {
            size: self.size,
            sha256: hex::encode(self.hasher.clone().finalize()),
        };
        if self.version == VERSION {
            let mut trailer = self.size.to_be_bytes().to_vec();
            trailer.extend_from_slice(&self.hasher.clone().finalize());
            let mut rest: &[u8] = &trailer;
            while !rest.is_empty() {
                if self.pending.len() == self.chunk {
                    self.seal_pending(false, out)?;
                }
                let take = (self.chunk - self.pending.len()).min(rest.len());
                self.pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        self.seal_pending(true, out)?;
        Ok(digest)
    }

    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let counter = self.counter;
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(&self.prefix, counter, last),
                &self.aad,
                self.pending.as_mut_slice().into(),
            )
            .map_err(|_| StreamError::Authentication { chunk: counter })?;
        out.extend_from_slice(&self.pending);
        out.extend_from_slice(&tag);
        self.pending.clear();
        if !last {
            self.counter = counter
                .checked_add(1)
                .ok_or_else(|| StreamError::BadHeader("more chunks than a counter holds".into()))?;
        }
        Ok(())
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.pending.iter_mut().for_each(|b| *b = 0);
    }
}

/// Seals everything `input` yields into `output` in format 3; returns the
/// plaintext's digest and the bytes written.
pub fn seal(
    data_key: &Secret,
    encrypted_key: &[u8],
    aad_context: &[u8],
    metadata: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(Digest, u64), StreamError> {
    let (mut sealer, header) = Sealer::new(data_key, encrypted_key, aad_context, metadata)?;
    output.write_all(&header)?;
    let mut written = header.len() as u64;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut sealed = Vec::with_capacity(CHUNK_BYTES as usize + TAG_LEN);
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        sealer.update(&buf[..n], &mut sealed)?;
        output.write_all(&sealed)?;
        written += sealed.len() as u64;
        sealed.clear();
    }
    let digest = sealer.finish(&mut sealed)?;
    output.write_all(&sealed)?;
    written += sealed.len() as u64;
    Ok((digest, written))
}

/// The header at the start of `stored`: `Ok(None)` while more bytes are
/// needed (a header is at most about 128 KiB). Not yet authenticated: that
/// happens with the first chunk.
pub fn parse_header(stored: &[u8]) -> Result<Option<Header>, StreamError> {
    let magic_seen = stored.len().min(MAGIC.len());
    if stored[..magic_seen] != MAGIC[..magic_seen] {
        return Err(StreamError::NotAnEnvelope);
    }
    if stored.len() < FIXED_LEN {
        return Ok(None);
    }
    let version = stored[8];
    if version != VERSION && version != VERSION_2 {
        return Err(StreamError::UnsupportedVersion(version));
    }
    let key_len = u16::from_be_bytes([stored[9], stored[10]]) as usize;
    let fixed_end = FIXED_LEN + key_len + PREFIX_LEN + 8;
    if stored.len() < fixed_end {
        return Ok(None);
    }
    let at = FIXED_LEN + key_len;
    let prefix: [u8; PREFIX_LEN] = stored[at..at + PREFIX_LEN].try_into().expect("7 bytes");
    let chunk = u32::from_be_bytes(
        stored[at + PREFIX_LEN..at + PREFIX_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let meta_len = u32::from_be_bytes(stored[at + PREFIX_LEN + 4..fixed_end].try_into().expect("4 bytes"));
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(StreamError::BadHeader(format!("chunk size {chunk}")));
    }
    if meta_len > MAX_METADATA {
        return Err(StreamError::BadHeader(format!("metadata of {meta_len} bytes")));
    }
    let end = fixed_end + meta_len as usize;
    if stored.len() < end {
        return Ok(None);
    }
    Ok(Some(Header {
        bytes: stored[..end].to_vec(),
        version,
        encrypted_key: stored[FIXED_LEN..at].to_vec(),
        prefix,
        chunk,
        metadata: stored[fixed_end..end].to_vec(),
    }))
}

/// Reads and checks the header from a reader.
pub fn read_header(input: &mut impl Read) -> Result<Header, StreamError> {
    let mut stored = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if let Some(header) = parse_header(&stored)? {
            return Ok(header);
        }
        if read_full(input, &mut byte)? == 0 {
            return Err(if stored.len() < MAGIC.len() {
                StreamError::NotAnEnvelope
            } else {
                StreamError::Truncated
            });
        }
        stored.push(byte[0]);
    }
}

/// Opens a stream as it comes, after its header: each [`Opener::update`]
/// writes the plaintext of every chunk it authenticated, [`Opener::finish`]
/// the last one and checks format 3's trailer. Until `finish` succeeded the
/// output may be a cut-short stream: the caller writes to a temporary file
/// and discards it on error. Holds one sealed chunk.
pub struct Opener {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    frame: usize,
    trailer: bool,
    /// Sealed bytes not opened yet: a whole frame is opened once a byte after
    /// it arrives (only then is it known not to be the last).
    held: Vec<u8>,
    /// Format 3: the last plaintext bytes, kept back until it is known they
    /// are not the trailer.
    tail: Vec<u8>,
    counter: u32,
    hasher: Sha256,
    size: u64,
}

impl Opener {
    pub fn new(header: &Header, data_key: &Secret, aad_context: &[u8]) -> Result<Opener, StreamError> {
        let mut aad = header.bytes.clone();
        aad.extend_from_slice(aad_context);
        let frame = header.chunk as usize + TAG_LEN;
        Ok(Opener {
            cipher: cipher(data_key)?,
            aad,
            prefix: header.prefix,
            frame,
            trailer: header.version == VERSION,
            held: Vec::with_capacity(frame),
            tail: Vec::new(),
            counter: 0,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Takes more of the stored object (after the header).
    pub fn update(&mut self, mut data: &[u8], out: &mut impl Write) -> Result<(), StreamError> {
        while !data.is_empty() {
            if self.held.len() == self.frame {
                self.open_held(false, out)?;
            }
            let take = (self.frame - self.held.len()).min(data.len());
            self.held.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// The end of the object: opens the last chunk, checks the trailer.
    pub fn finish(mut self, out: &mut impl Write) -> Result<Digest, StreamError> {
        self.open_held(true, out)?;
        let digest = Digest {
            size: self.size,
            sha256: hex::encode(self.hasher.clone().finalize()),
        };
        if !self.trailer {
            return Ok(digest);
        }
        if self.tail.len() != TRAILER_LEN {
            return Err(StreamError::Truncated);
        }
        let want_size = u64::from_be_bytes(self.tail[..8].try_into().expect("8 bytes"));
        let want_sha256 = hex::encode(&self.tail[8..]);
        if want_size != digest.size || want_sha256 != digest.sha256 {
            return Err(StreamError::Trailer {
                want_size,
                want_sha256,
                size: digest.size,
                sha256: digest.sha256,
            });
        }
        Ok(digest)
    }

    fn open_held(&mut self, last: bool, out: &mut impl Write) -> Result<(), StreamError> {
        let counter = self.counter;
        let n = self.held.len();
        if n < TAG_LEN {
            return Err(StreamError::Authentication { chunk: counter });
        }
        let (body, tag) = self.held.split_at_mut(n - TAG_LEN);
        let tag = Tag::try_from(&*tag).map_err(|_| StreamError::Truncated)?;
        self.cipher
            .decrypt_inout_detached(&nonce(&self.prefix, counter, last), &self.aad, body.into(), &tag)
            .map_err(|_| StreamError::Authentication { chunk: counter })?;
        self.held.truncate(n - TAG_LEN);
        if self.trailer {
            self.tail.extend_from_slice(&self.held);
            let release = self.tail.len().saturating_sub(TRAILER_LEN);
            write_plain(&self.tail[..release], &mut self.hasher, &mut self.size, out)?;
            self.tail.drain(..release);
        } else {
            write_plain(&self.held, &mut self.hasher, &mut self.size, out)?;
        }
        self.held.iter_mut().for_each(|b| *b = 0);
        self.held.clear();
        if !last {
            self.counter = counter
                .checked_add(1)
                .ok_or(StreamError::Authentication { chunk: counter })?;
        }
        Ok(())
    }
}

fn write_plain(plain: &[u8], hasher: &mut Sha256, size: &mut u64, out: &mut impl Write) -> Result<(), StreamError> {
    hasher.update(plain);
    *size += plain.len() as u64;
    out.write_all(plain)?;
    Ok(())
}

/// Opens a whole stored object from a reader into `output` (tests, the
/// fuzz target): the header, then every chunk.
pub fn open(
    header: &Header,
    data_key: &Secret,
    aad_context: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<Digest, StreamError> {
    let mut opener = Opener::new(header, data_key, aad_context)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        opener.update(&buf[..n], output)?;
    }
    opener.finish(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn key(b: u8) -> Secret {
        Secret::new(vec![b; 32])
    }

    /// Seals `plain` in `version` with chunks of `chunk`, fed in pieces of `piece`.
    fn sealed_in(plain: &[u8], chunk: u32, version: u8, piece: usize) -> Vec<u8> {
        let (mut sealer, mut out) = Sealer::with(&key(1), b"wrapped", b"ctx", b"{\"r\":1}", chunk, version).unwrap();
        for part in plain.chunks(piece.max(1)) {
            sealer.update(part, &mut out).unwrap();
        }
        let digest = sealer.finish(&mut out).unwrap();
        assert_eq!(digest.size, plain.len() as u64);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(plain)));
        out
    }

    fn sealed(plain: &[u8], chunk: u32) -> Vec<u8> {
        sealed_in(plain, chunk, VERSION, 7)
    }

    /// Opens `stored` fed in pieces of `piece`.
    fn opened_in(stored: &[u8], k: &Secret, ctx: &[u8], piece: usize) -> Result<Vec<u8>, StreamError> {
        let header = parse_header(stored)?.ok_or(StreamError::Truncated)?;
        let mut opener = Opener::new(&header, k, ctx)?;
        let mut out = Vec::new();
        for part in stored[header.len()..].chunks(piece.max(1)) {
            opener.update(part, &mut out)?;
        }
        let digest = opener.finish(&mut out)?;
        assert_eq!(digest.size, out.len() as u64);
        Ok(out)
    }

    fn opened(stored: &[u8], k: &Secret, ctx: &[u8]) -> Result<Vec<u8>, StreamError> {
        opened_in(stored, k, ctx, 5)
    }

    const HEADER: usize = 26 + 7 + 7;

    #[test]
    fn round_trips_at_and_around_chunk_boundaries_in_both_versions() {
        for len in [0usize, 1, 15, 16, 17, 24, 31, 32, 33, 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            // Format 2: a full last chunk carries the last flag itself; only
            // empty input seals one empty chunk.
            let v2 = sealed_in(&plain, 16, VERSION_2, 16);
            let chunks = len.div_ceil(16).max(1);
            assert_eq!(v2.len(), HEADER + len + chunks * TAG_LEN, "v2 len {len}");
            assert_eq!(opened(&v2, &key(1), b"ctx").unwrap(), plain, "v2 len {len}");
            // Format 3: the same framing over the snapshot and its trailer.
            let v3 = sealed(&plain, 16);
            let chunks = (len + TRAILER_LEN).div_ceil(16);
            assert_eq!(v3.len(), HEADER + len + TRAILER_LEN + chunks * TAG_LEN, "v3 len {len}");
            assert_eq!(opened(&v3, &key(1), b"ctx").unwrap(), plain, "v3 len {len}");
            assert_eq!(read_header(&mut Cursor::new(&v3)).unwrap().metadata, b"{\"r\":1}");
            assert_eq!(read_header(&mut Cursor::new(&v3)).unwrap().version, 3);
        }
    }

    #[test]
    fn seal_and_open_from_readers_match_the_pieces() {
        let plain: Vec<u8> = (0..3 * CHUNK_BYTES as usize + 5).map(|i| (i % 251) as u8).collect();
        let mut stored = Vec::new();
        let (digest, written) = seal(&key(1), b"k", b"ctx", b"{}", &mut Cursor::new(&plain), &mut stored).unwrap();
        assert_eq!(written, stored.len() as u64);
        assert_eq!(digest.size, plain.len() as u64);
        let mut input = Cursor::new(&stored);
        let header = read_header(&mut input).unwrap();
        let mut out = Vec::new();
        assert_eq!(open(&header, &key(1), b"ctx", &mut input, &mut out).unwrap(), digest);
        assert_eq!(out, plain);
    }

    #[test]
    fn every_changed_byte_fails_in_both_versions() {
        for version in [VERSION_2, VERSION] {
            let stored = sealed_in(&[5u8; 40], 16, version, 40);
            for i in 0..stored.len() {
                let mut bad = stored.clone();
                bad[i] ^= 0x01;
                assert!(opened(&bad, &key(1), b"ctx").is_err(), "v{version} byte {i} accepted");
            }
        }
    }

    #[test]
    fn a_cut_or_extended_stream_fails_even_at_a_chunk_boundary() {
        for version in [VERSION_2, VERSION] {
            let stored = sealed_in(&[9u8; 48], 16, version, 48);
            for len in 0..stored.len() {
                assert!(
                    opened(&stored[..len], &key(1), b"ctx").is_err(),
                    "v{version} cut to {len}"
                );
            }
            let mut longer = stored.clone();
            longer.extend_from_slice(&[0u8; 16]);
            assert!(opened(&longer, &key(1), b"ctx").is_err());
        }
    }

    #[test]
    fn swapped_chunks_another_key_or_context_fail() {
        let plain: Vec<u8> = [1u8; 16].iter().chain([2u8; 16].iter()).copied().collect();
        let stored = sealed(&plain, 16);
        let mut swapped = stored.clone();
        swapped[HEADER..HEADER + 32].copy_from_slice(&stored[HEADER + 32..HEADER + 64]);
        swapped[HEADER + 32..HEADER + 64].copy_from_slice(&stored[HEADER..HEADER + 32]);
        assert!(matches!(
            opened(&swapped, &key(1), b"ctx"),
            Err(StreamError::Authentication { chunk: 0 })
        ));
        assert!(opened(&stored, &key(2), b"ctx").is_err());
        assert!(opened(&stored, &key(1), b"other").is_err());
    }

    #[test]
    fn a_version_2_header_cannot_pass_for_3_nor_3_for_2() {
        // The version byte is in the associated data: relabelled, nothing opens.
        for (from, to) in [(VERSION_2, VERSION), (VERSION, VERSION_2)] {
            let mut stored = sealed_in(&[3u8; 100], 16, from, 100);
            stored[8] = to;
            assert!(opened(&stored, &key(1), b"ctx").is_err(), "v{from} read as v{to}");
        }
    }

    #[test]
    fn a_wrong_trailer_is_refused_though_authenticated() {
        // A writer whose sealed trailer does not describe the stream: a
        // format 3 header, the trailer made by hand.
        let mut plain = [4u8; 30].to_vec();
        plain.extend_from_slice(&30u64.to_be_bytes());
        plain.extend_from_slice(&[0u8; 32]);
        let (mut sealer, mut stored) = Sealer::with(&key(1), b"wrapped", b"ctx", b"{}", 16, VERSION).unwrap();
        sealer.version = VERSION_2; // no trailer of its own
        sealer.update(&plain, &mut stored).unwrap();
        sealer.finish(&mut stored).unwrap();
        assert!(matches!(
            opened(&stored, &key(1), b"ctx"),
            Err(StreamError::Trailer {
                want_size: 30,
                size: 30,
                ..
            })
        ));
    }

    #[test]
    fn a_secret_envelope_or_another_file_is_named() {
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
        assert!(matches!(parse_header(b"NBSEC"), Ok(None)));
        assert!(matches!(parse_header(b"NBX"), Err(StreamError::NotAnEnvelope)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the bytes arrive, sealing and opening give the plaintext back.
        #[test]
        fn any_plaintext_in_any_pieces_round_trips(
            plain in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1u32..64,
            seal_piece in 1usize..100,
            open_piece in 1usize..100,
            version in prop_oneof![Just(VERSION_2), Just(VERSION)],
        ) {
            let stored = sealed_in(&plain, chunk, version, seal_piece);
            prop_assert_eq!(opened_in(&stored, &key(1), b"ctx", open_piece).unwrap(), plain);
        }

        /// Any cut, any two chunks swapped, any chunk dropped or repeated: refused.
        #[test]
        fn cut_reordered_dropped_or_repeated_chunks_are_refused(
            plain in proptest::collection::vec(any::<u8>(), 1..200),
            chunk in 1u32..32,
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let stored = sealed(&plain, chunk);
            let frame = chunk as usize + TAG_LEN;
            let frames: Vec<&[u8]> = stored[HEADER..].chunks(frame).collect();
            let rebuild = |order: &[usize]| {
                let mut v = stored[..HEADER].to_vec();
                for i in order {
                    v.extend_from_slice(frames[*i]);
                }
                v
            };
            let n = frames.len();
            let cut_at = cut.index(stored.len());
            prop_assert!(opened(&stored[..cut_at], &key(1), b"ctx").is_err());
            let (i, j) = (a.index(n), b.index(n));
            if frames[i] != frames[j] {
                let mut order: Vec<usize> = (0..n).collect();
                order.swap(i, j);
                prop_assert!(opened(&rebuild(&order), &key(1), b"ctx").is_err(), "swapped {} and {}", i, j);
            }
            let dropped: Vec<usize> = (0..n).filter(|k| *k != i).collect();
            prop_assert!(opened(&rebuild(&dropped), &key(1), b"ctx").is_err(), "dropped {}", i);
            let mut repeated: Vec<usize> = (0..n).collect();
            repeated.insert(i, i);
            prop_assert!(opened(&rebuild(&repeated), &key(1), b"ctx").is_err(), "repeated {}", i);
        }
    }
}
