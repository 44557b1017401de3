//! The stored form of a secret: envelope format version 1 (README.md,
//! "Secrets at rest", documents it for other readers).
//!
//! ```text
//! offset     size  field
//! 0          8     magic "NBSECRET"
//! 8          1     format version: 1
//! 9          2     n: length of the encrypted data key (big-endian)
//! 11         n     the data key as KMS GenerateDataKey returned it (CiphertextBlob)
//! 11+n       12    AES-GCM nonce
//! 23+n       ..    AES-256-GCM ciphertext followed by its 16-byte tag
//! ```
//!
//! The associated data is the whole header (bytes `0..23+n`) followed by
//! the encryption context, so a changed byte anywhere fails, and so does a
//! blob moved to another path or environment even if KMS were lenient.
//!
//! Version 4 seals the object with a content key of its own and wraps that
//! key once per role that reads the object, with the role's data key for
//! the upload (`bundle`): a node unwraps one data key for everything one
//! upload sealed for its role, instead of one per object.
//!
//! ```text
//! offset     size  field
//! 0          8     magic "NBSECRET"
//! 8          1     format version: 4
//! 9          1     k: the number of slots, 1 to 8
//! then k slots, each:
//!            2     s: length of the scope (big-endian)
//!            s     the scope: the data key's KMS context path (`secure/`, `compute/`)
//!            2     n: length of the encrypted data key
//!            n     the data key as KMS GenerateDataKey returned it
//!            12    AES-GCM nonce
//!            48    the content key sealed with the data key, then its tag
//! then       12    AES-GCM nonce
//!            ..    AES-256-GCM ciphertext under the content key, then its tag
//! ```
//!
//! A slot's associated data is the magic, the version and the slot's bytes
//! up to its sealed key, followed by the object's encryption context; the
//! content's is every byte before the ciphertext followed by the same
//! context. (Versions 2 and 3 are the etcd backups' formats, `backup::format`:
//! the magic is shared, so are the version numbers.)

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::{Context, Secret};

pub const MAGIC: &[u8; 8] = b"NBSECRET";
pub const VERSION: u8 = 1;
/// The version of an object sealed for its readers' roles (`seal_bundled`).
pub const BUNDLED: u8 = 4;
/// At most this many slots (roles) per object.
pub const MAX_SLOTS: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CONTENT_KEY_LEN: usize = 32;
/// The S3 user metadata every envelope is stored with. It marks the object
/// as an envelope even when its magic bytes were damaged, so a damaged
/// envelope is never mistaken for a plain SSE-KMS object.
pub const METADATA_KEY: &str = "nodeboot-format";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a nodeboot envelope (no NBSECRET magic)")]
    NotAnEnvelope,
    #[error("envelope format version {0} is not supported (this nodeboot reads versions {VERSION} and {BUNDLED})")]
    UnsupportedVersion(u8),
    #[error("the envelope is malformed: {0}")]
    Malformed(&'static str),
    #[error("the envelope is sealed for {sealed:?} only, not for this node's {wanted}")]
    NoSlot { sealed: Vec<String>, wanted: String },
    #[error("the envelope is cut short")]
    Truncated,
    #[error("the encrypted data key is {0} bytes, more than an envelope can hold")]
    KeyTooLong(usize),
    #[error("authentication failed: the object was changed, or belongs to another environment or path")]
    Authentication,
}

/// A parsed envelope, borrowing from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    header: &'a [u8],
    pub encrypted_key: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

pub fn is_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>, FormatError> {
    if !is_envelope(bytes) {
        return Err(FormatError::NotAnEnvelope);
    }
    let version = *bytes.get(8).ok_or(FormatError::Truncated)?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let key_len = u16::from_be_bytes(
        bytes
            .get(9..11)
            .ok_or(FormatError::Truncated)?
            .try_into()
            .expect("2 bytes"),
    ) as usize;
    let header_len = 11 + key_len + NONCE_LEN;
    if bytes.len() < header_len + TAG_LEN {
        return Err(FormatError::Truncated);
    }
    Ok(Envelope {
        header: &bytes[..header_len],
        encrypted_key: &bytes[11..11 + key_len],
        nonce: &bytes[11 + key_len..header_len],
        ciphertext: &bytes[header_len..],
    })
}

fn cipher(data_key: &Secret) -> Result<Aes256Gcm, FormatError> {
    // KMS hands out 32-byte keys for AES_256; anything else cannot have come from it.
    Aes256Gcm::new_from_slice(data_key.expose()).map_err(|_| FormatError::Authentication)
}

fn aad(header: &[u8], context: &Context) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.aad());
    aad
}

/// Encrypts `plaintext` under `data_key` with a fresh nonce; `encrypted_key`
/// is stored beside it for KMS to unwrap.
pub fn seal(
    data_key: &Secret,
    encrypted_key: &[u8],
    context: &Context,
    plaintext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let key_len = u16::try_from(encrypted_key.len()).map_err(|_| FormatError::KeyTooLong(encrypted_key.len()))?;
    // One data key per object, so the nonce never repeats under a key; a
    // random one costs nothing and keeps that true if keys were ever reused.
    let nonce = Nonce::generate();
    let mut out = Vec::with_capacity(11 + encrypted_key.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(encrypted_key);
    out.extend_from_slice(&nonce);
    let aad = aad(&out, context);
    let ciphertext = cipher(data_key)?
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| FormatError::Authentication)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts and authenticates an envelope with its unwrapped data key.
pub fn open(envelope: &Envelope<'_>, data_key: &Secret, context: &Context) -> Result<Secret, FormatError> {
    let nonce = Nonce::try_from(envelope.nonce).map_err(|_| FormatError::Truncated)?;
    let aad = aad(envelope.header, context);
    let plaintext = cipher(data_key)?
        .decrypt(
            &nonce,
            Payload {
                msg: envelope.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| FormatError::Authentication)?;
    Ok(Secret::new(plaintext))
}

/// A role's data key to seal a version 4 envelope with: the scope it was
/// made for (its KMS context path), the key, and KMS's wrapped form of it.
pub struct SlotKey<'a> {
    pub scope: &'a str,
    pub data_key: &'a Secret,
    pub encrypted_key: &'a [u8],
}

/// One role's way into a version 4 envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot<'a> {
    /// The KMS context path the data key was made for.
    pub scope: &'a str,
    pub encrypted_key: &'a [u8],
    /// The slot's bytes before its sealed key (part of its associated data).
    head: &'a [u8],
    nonce: &'a [u8],
    sealed_key: &'a [u8],
}

/// A parsed version 4 envelope, borrowing from the stored bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Bundled<'a> {
    header: &'a [u8],
    pub slots: Vec<Slot<'a>>,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Reads the stored bytes front to back.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).ok_or(FormatError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(FormatError::Truncated)?;
        self.at = end;
        Ok(out)
    }

    fn sized(&mut self) -> Result<&'a [u8], FormatError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        self.take(len as usize)
    }
}

/// The version byte of an envelope (after its magic).
pub fn version(bytes: &[u8]) -> Result<u8, FormatError> {
    if !is_envelope(bytes) {
        return Err(FormatError::NotAnEnvelope);
    }
    bytes.get(8).copied().ok_or(FormatError::Truncated)
}

pub fn parse_bundled(bytes: &[u8]) -> Result<Bundled<'_>, FormatError> {
    match version(bytes)? {
        BUNDLED => {}
        other => return Err(FormatError::UnsupportedVersion(other)),
    }
    let mut cursor = Cursor { bytes, at: 9 };
    let count = cursor.take(1)?[0] as usize;
    if count == 0 || count > MAX_SLOTS {
        return Err(FormatError::Malformed("1 to 8 slots"));
    }
    let mut slots = Vec::with_capacity(count);
    for _ in 0..count {
        let start = cursor.at;
        let scope = std::str::from_utf8(cursor.sized()?).map_err(|_| FormatError::Malformed("a scope is not UTF-8"))?;
        let encrypted_key = cursor.sized()?;
        let nonce = cursor.take(NONCE_LEN)?;
        let head = &bytes[start..cursor.at];
        let sealed_key = cursor.take(CONTENT_KEY_LEN + TAG_LEN)?;
        slots.push(Slot {
            scope,
            encrypted_key,
            head,
            nonce,
            sealed_key,
        });
    }
    let nonce = cursor.take(NONCE_LEN)?;
    let header = &bytes[..cursor.at];
    let ciphertext = &bytes[cursor.at..];
    if ciphertext.len() < TAG_LEN {
        return Err(FormatError::Truncated);
    }
    Ok(Bundled {
        header,
        slots,
        nonce,
        ciphertext,
    })
}

fn slot_aad(head: &[u8], context: &Context) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.push(BUNDLED);
    aad.extend_from_slice(head);
    aad.extend_from_slice(&context.aad());
    aad
}

fn sized(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), FormatError> {
    let len = u16::try_from(bytes.len()).map_err(|_| FormatError::KeyTooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn encrypt(key: &Secret, nonce: &[u8], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, FormatError> {
    let nonce = Nonce::try_from(nonce).map_err(|_| FormatError::Truncated)?;
    cipher(key)?
        .encrypt(&nonce, Payload { msg, aad })
        .map_err(|_| FormatError::Authentication)
}

fn decrypt(key: &Secret, nonce: &[u8], msg: &[u8], aad: &[u8]) -> Result<Secret, FormatError> {
    let nonce = Nonce::try_from(nonce).map_err(|_| FormatError::Truncated)?;
    cipher(key)?
        .decrypt(&nonce, Payload { msg, aad })
        .map(Secret::new)
        .map_err(|_| FormatError::Authentication)
}

/// Encrypts `plaintext` under a fresh content key, wrapped once with each
/// of `keys` (one per role that reads the object; fresh nonces throughout).
pub fn seal_bundled(keys: &[SlotKey<'_>], context: &Context, plaintext: &[u8]) -> Result<Vec<u8>, FormatError> {
    if keys.is_empty() || keys.len() > MAX_SLOTS {
        return Err(FormatError::Malformed("1 to 8 slots"));
    }
    let mut raw = <[u8; CONTENT_KEY_LEN]>::generate();
    let content_key = Secret::new(raw.to_vec());
    zeroize::Zeroize::zeroize(&mut raw);
    let mut out = Vec::with_capacity(10 + plaintext.len() + keys.len() * 256 + NONCE_LEN + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(BUNDLED);
    out.push(keys.len() as u8);
    for key in keys {
        let start = out.len();
        sized(&mut out, key.scope.as_bytes())?;
        sized(&mut out, key.encrypted_key)?;
        let nonce = <[u8; NONCE_LEN]>::generate();
        out.extend_from_slice(&nonce);
        let aad = slot_aad(&out[start..], context);
        let sealed = encrypt(key.data_key, &nonce, content_key.expose(), &aad)?;
        out.extend_from_slice(&sealed);
    }
    let nonce = <[u8; NONCE_LEN]>::generate();
    out.extend_from_slice(&nonce);
    let aad = aad(&out, context);
    let ciphertext = encrypt(&content_key, &nonce, plaintext, &aad)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts and authenticates a version 4 envelope through its slot
/// `slot`, whose data key KMS unwrapped.
pub fn open_bundled(
    envelope: &Bundled<'_>,
    slot: usize,
    data_key: &Secret,
    context: &Context,
) -> Result<Secret, FormatError> {
    let slot = envelope.slots.get(slot).ok_or(FormatError::Malformed("no such slot"))?;
    let content_key = decrypt(data_key, slot.nonce, slot.sealed_key, &slot_aad(slot.head, context))?;
    decrypt(
        &content_key,
        envelope.nonce,
        envelope.ciphertext,
        &aad(envelope.header, context),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Secret {
        Secret::new(vec![byte; 32])
    }

    fn context(environment: &str, path: &str) -> Context {
        Context {
            environment: environment.into(),
            path: path.into(),
        }
    }

    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        seal(
            &key(7),
            b"wrapped-data-key-from-kms",
            &context("prod", "common/ca.crt"),
            plaintext,
        )
        .unwrap()
    }

    fn round_trip(stored: &[u8], data_key: &Secret, ctx: &Context) -> Result<Secret, FormatError> {
        open(&parse(stored)?, data_key, ctx)
    }

    #[test]
    fn an_envelope_opens_to_the_same_bytes() {
        for plaintext in [
            &b""[..],
            b"x",
            b"-----BEGIN CERTIFICATE-----\n",
            &[0u8, 255, 10, 13, 0][..],
        ] {
            let stored = sealed(plaintext);
            let parsed = parse(&stored).unwrap();
            assert_eq!(parsed.encrypted_key, b"wrapped-data-key-from-kms");
            assert_eq!(
                round_trip(&stored, &key(7), &context("prod", "common/ca.crt"))
                    .unwrap()
                    .expose(),
                plaintext
            );
        }
    }

    #[test]
    fn the_layout_is_as_documented() {
        let stored = sealed(b"abc");
        assert_eq!(&stored[..8], b"NBSECRET");
        assert_eq!(stored[8], 1);
        assert_eq!(u16::from_be_bytes([stored[9], stored[10]]), 25);
        assert_eq!(&stored[11..36], b"wrapped-data-key-from-kms");
        assert_eq!(stored.len(), 11 + 25 + 12 + 3 + 16);
    }

    #[test]
    fn sealing_twice_gives_different_bytes() {
        assert_ne!(sealed(b"same"), sealed(b"same"));
    }

    #[test]
    fn every_changed_byte_fails() {
        let stored = sealed(b"a small secret");
        for i in 0..stored.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = stored.clone();
                bad[i] ^= flip;
                let result = round_trip(&bad, &key(7), &context("prod", "common/ca.crt"));
                assert!(result.is_err(), "byte {i} ^ {flip:#x} was accepted");
            }
        }
    }

    #[test]
    fn a_cut_or_extended_envelope_fails() {
        let stored = sealed(b"a small secret");
        for len in 0..stored.len() {
            assert!(
                round_trip(&stored[..len], &key(7), &context("prod", "common/ca.crt")).is_err(),
                "cut to {len}"
            );
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert!(round_trip(&longer, &key(7), &context("prod", "common/ca.crt")).is_err());
    }

    #[test]
    fn another_context_or_key_fails() {
        let stored = sealed(b"secret");
        assert_eq!(
            round_trip(&stored, &key(7), &context("staging", "common/ca.crt")).unwrap_err(),
            FormatError::Authentication
        );
        assert_eq!(
            round_trip(&stored, &key(7), &context("prod", "common/ca.key")).unwrap_err(),
            FormatError::Authentication
        );
        assert_eq!(
            round_trip(&stored, &key(8), &context("prod", "common/ca.crt")).unwrap_err(),
            FormatError::Authentication
        );
        assert_eq!(
            round_trip(&stored, &Secret::new(vec![7; 16]), &context("prod", "common/ca.crt")).unwrap_err(),
            FormatError::Authentication
        );
    }

    fn bundled(plaintext: &[u8]) -> Vec<u8> {
        let (etcd, compute) = (key(1), key(2));
        seal_bundled(
            &[
                SlotKey {
                    scope: "secure/",
                    data_key: &etcd,
                    encrypted_key: b"etcd-data-key-from-kms",
                },
                SlotKey {
                    scope: "compute/",
                    data_key: &compute,
                    encrypted_key: b"compute-data-key",
                },
            ],
            &context("prod", "common/ca.crt"),
            plaintext,
        )
        .unwrap()
    }

    fn open_slot(stored: &[u8], slot: usize, data_key: &Secret, ctx: &Context) -> Result<Secret, FormatError> {
        open_bundled(&parse_bundled(stored)?, slot, data_key, ctx)
    }

    #[test]
    fn a_bundled_envelope_opens_through_each_slot() {
        for plaintext in [&b""[..], b"x", &[0u8, 255, 10][..], &[7u8; 5000][..]] {
            let stored = bundled(plaintext);
            let parsed = parse_bundled(&stored).unwrap();
            let scopes: Vec<_> = parsed.slots.iter().map(|s| (s.scope, s.encrypted_key)).collect();
            assert_eq!(
                scopes,
                [
                    ("secure/", &b"etcd-data-key-from-kms"[..]),
                    ("compute/", &b"compute-data-key"[..])
                ]
            );
            let ctx = context("prod", "common/ca.crt");
            assert_eq!(open_slot(&stored, 0, &key(1), &ctx).unwrap().expose(), plaintext);
            assert_eq!(open_slot(&stored, 1, &key(2), &ctx).unwrap().expose(), plaintext);
            assert_eq!(version(&stored), Ok(BUNDLED));
        }
    }

    #[test]
    fn a_bundled_envelope_is_laid_out_as_documented() {
        let stored = bundled(b"abc");
        assert_eq!(&stored[..10], b"NBSECRET\x04\x02");
        assert_eq!(&stored[10..12], &[0, 7]);
        assert_eq!(&stored[12..19], b"secure/");
        assert_eq!(&stored[19..21], &[0, 22]);
        let slots = 2 * (2 + 2 + 12 + 48) + 7 + 22 + 8 + 16;
        assert_eq!(stored.len(), 10 + slots + 12 + 3 + 16);
    }

    #[test]
    fn every_changed_byte_of_a_bundled_envelope_fails_through_either_slot() {
        let stored = bundled(b"a small secret");
        let ctx = context("prod", "common/ca.crt");
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            for (slot, k) in [(0, key(1)), (1, key(2))] {
                assert!(open_slot(&bad, slot, &k, &ctx).is_err(), "byte {i}, slot {slot}");
            }
        }
        for len in 0..stored.len() {
            assert!(open_slot(&stored[..len], 0, &key(1), &ctx).is_err(), "cut to {len}");
        }
    }

    #[test]
    fn a_bundled_envelope_is_bound_to_its_context_and_keys() {
        let stored = bundled(b"secret");
        for (slot, k, ctx) in [
            (0, key(1), context("staging", "common/ca.crt")),
            (0, key(1), context("prod", "common/ca.key")),
            (0, key(2), context("prod", "common/ca.crt")),
            (1, key(1), context("prod", "common/ca.crt")),
        ] {
            assert_eq!(
                open_slot(&stored, slot, &k, &ctx).unwrap_err(),
                FormatError::Authentication,
                "slot {slot}, {ctx:?}"
            );
        }
        assert!(open_slot(&stored, 2, &key(1), &context("prod", "common/ca.crt")).is_err());
        // Version 1's parser does not take it, nor the other way round.
        assert_eq!(parse(&stored).unwrap_err(), FormatError::UnsupportedVersion(4));
        assert_eq!(
            parse_bundled(&sealed(b"x")).unwrap_err(),
            FormatError::UnsupportedVersion(1)
        );
    }

    #[test]
    fn a_bundled_envelope_with_no_slot_or_too_many_is_refused() {
        let mut stored = bundled(b"secret");
        stored[9] = 0;
        assert_eq!(
            parse_bundled(&stored).unwrap_err(),
            FormatError::Malformed("1 to 8 slots")
        );
        stored[9] = 9;
        assert_eq!(
            parse_bundled(&stored).unwrap_err(),
            FormatError::Malformed("1 to 8 slots")
        );
        let ctx = context("prod", "x");
        assert!(seal_bundled(&[], &ctx, b"x").is_err());
    }

    #[test]
    fn unknown_versions_and_plain_bytes_are_named() {
        let mut stored = sealed(b"secret");
        stored[8] = 2;
        assert_eq!(parse(&stored).unwrap_err(), FormatError::UnsupportedVersion(2));
        assert_eq!(parse(b"apiVersion: v1\n").unwrap_err(), FormatError::NotAnEnvelope);
        assert_eq!(parse(b"NBSECRET").unwrap_err(), FormatError::Truncated);
    }
}
