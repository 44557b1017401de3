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

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::{Context, Secret};

pub const MAGIC: &[u8; 8] = b"NBSECRET";
pub const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The S3 user metadata every envelope is stored with. It marks the object
/// as an envelope even when its magic bytes were damaged, so a damaged
/// envelope is never mistaken for a plain SSE-KMS object.
pub const METADATA_KEY: &str = "nodeboot-format";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a nodeboot envelope (no NBSECRET magic)")]
    NotAnEnvelope,
    #[error("envelope format version {0} is not supported (this nodeboot reads version {VERSION})")]
    UnsupportedVersion(u8),
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

    #[test]
    fn unknown_versions_and_plain_bytes_are_named() {
        let mut stored = sealed(b"secret");
        stored[8] = 2;
        assert_eq!(parse(&stored).unwrap_err(), FormatError::UnsupportedVersion(2));
        assert_eq!(parse(b"apiVersion: v1\n").unwrap_err(), FormatError::NotAnEnvelope);
        assert_eq!(parse(b"NBSECRET").unwrap_err(), FormatError::Truncated);
    }
}
