//! Which member a data directory holds, read from its write-ahead log
//! without starting etcd: a member started on data the cluster has moved
//! past would vote with what it has forgotten, so the etcd stage must know
//! whose data it is before it starts anything.
//!
//! etcd 3.5's WAL (`member/wal/<seq>-<index>.wal`, server/storage/wal):
//! every segment starts with a CRC record and then a metadata record, whose
//! data is `etcdserverpb.Metadata { NodeID = 1; ClusterID = 2 }`. A record
//! is an 8-byte little-endian frame length (the low 56 bits; when the top
//! bit is set, bits 56-58 are the padding that aligns the record to 8
//! bytes) followed by `walpb.Record { Type = 1; Crc = 2; Data = 3 }`.
//! Checked against the WAL a real etcd 3.5 writes (`tests/etcd_stale.rs`).

use std::path::{Path, PathBuf};

/// The WAL record type of the metadata record (`metadataType`).
const METADATA_TYPE: u64 = 1;
/// How much of a segment is read: the metadata record is the second record
/// of every segment, a few dozen bytes in.
const HEAD_BYTES: u64 = 4096;

/// The member and cluster a data directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: no WAL segment (*.wal)")]
    NoSegment { path: PathBuf },
    #[error("{path}: {detail}")]
    Bad { path: PathBuf, detail: String },
}

/// The identity of the member whose data is in `data_dir` (the directory
/// that holds `member/`), from its newest WAL segment.
pub fn identity(data_dir: &Path) -> Result<Identity, WalError> {
    identity_of_member_dir(&data_dir.join("member"))
}

/// The identity of the member whose `member/` directory is `member_dir`
/// (one kept aside, too).
pub fn identity_of_member_dir(member_dir: &Path) -> Result<Identity, WalError> {
    let wal = member_dir.join("wal");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .map_err(io(&wal))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let newest = segments.pop().ok_or(WalError::NoSegment { path: wal })?;
    let mut head = Vec::new();
    use std::io::Read;
    std::fs::File::open(&newest)
        .map_err(io(&newest))?
        .take(HEAD_BYTES)
        .read_to_end(&mut head)
        .map_err(io(&newest))?;
    parse_head(&head).map_err(|detail| WalError::Bad { path: newest, detail })
}

/// Pure: the identity in the metadata record among the first records of a
/// segment's bytes.
pub fn parse_head(bytes: &[u8]) -> Result<Identity, String> {
    let mut at = 0usize;
    for _ in 0..4 {
        let frame = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("no metadata record in the first {} bytes", bytes.len()))?;
        let frame = u64::from_le_bytes(frame.try_into().expect("8 bytes"));
        let len = (frame & 0x00ff_ffff_ffff_ffff) as usize;
        let pad = if frame >> 63 == 1 {
            ((frame >> 56) & 0x7) as usize
        } else {
            0
        };
        let start = at + 8;
        let record = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| format!("a record of {len} bytes at offset {at} runs past the segment's head"))?;
        let fields = fields(record)?;
        if varint_field(&fields, 1) == Some(METADATA_TYPE) {
            let data = bytes_field(&fields, 3).unwrap_or_default();
            let meta = self::fields(data)?;
            return Ok(Identity {
                member_id: varint_field(&meta, 1).ok_or("the metadata record has no NodeID")?,
                cluster_id: varint_field(&meta, 2).ok_or("the metadata record has no ClusterID")?,
            });
        }
        at = start + len + pad;
    }
    Err("no metadata record among the segment's first records".into())
}

/// A protobuf field: a varint or length-delimited bytes (the only two kinds
/// these messages use).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            2 => {
                let len = varint(&mut b)? as usize;
                let (data, rest) = (b.get(..len).ok_or("a field runs past its message")?, &b[len..]);
                b = rest;
                Field::Bytes(data)
            }
            wire => {
                return Err(format!(
                    "field {} has wire type {wire}, not a varint or bytes",
                    key >> 3
                ))
            }
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or("a varint runs past its message")?;
        *b = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn varint_field(fields: &[(u64, Field<'_>)], number: u64) -> Option<u64> {
    fields.iter().find_map(|(n, f)| match f {
        Field::Varint(v) if *n == number => Some(*v),
        _ => None,
    })
}

fn bytes_field<'a>(fields: &[(u64, Field<'a>)], number: u64) -> Option<&'a [u8]> {
    fields.iter().find_map(|(n, f)| match f {
        Field::Bytes(v) if *n == number => Some(*v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// One framed record as etcd's encoder writes it.
    fn record(kind: u64, crc: u64, data: &[u8]) -> Vec<u8> {
        let mut rec = Vec::new();
        put_varint(&mut rec, 1 << 3);
        put_varint(&mut rec, kind);
        put_varint(&mut rec, 2 << 3);
        put_varint(&mut rec, crc);
        if !data.is_empty() {
            put_varint(&mut rec, (3 << 3) | 2);
            put_varint(&mut rec, data.len() as u64);
            rec.extend_from_slice(data);
        }
        let pad = (8 - rec.len() % 8) % 8;
        let mut frame = rec.len() as u64;
        if pad != 0 {
            frame |= (0x80 | pad as u64) << 56;
        }
        let mut out = frame.to_le_bytes().to_vec();
        out.extend_from_slice(&rec);
        out.extend(std::iter::repeat_n(0, pad));
        out
    }

    fn metadata(node: u64, cluster: u64) -> Vec<u8> {
        let mut m = Vec::new();
        put_varint(&mut m, 1 << 3);
        put_varint(&mut m, node);
        put_varint(&mut m, 2 << 3);
        put_varint(&mut m, cluster);
        m
    }

    #[test]
    fn the_metadata_record_after_the_crc_record_names_member_and_cluster() {
        let mut seg = record(4, 0, &[]);
        seg.extend(record(
            1,
            0xdead_beef,
            &metadata(0x8e9e_05c5_2164_694d, 0xcdf8_1819_4e3a_1f5c),
        ));
        seg.extend(record(3, 7, &[1, 2, 3]));
        assert_eq!(
            parse_head(&seg).unwrap(),
            Identity {
                member_id: 0x8e9e_05c5_2164_694d,
                cluster_id: 0xcdf8_1819_4e3a_1f5c
            }
        );
    }

    #[test]
    fn a_segment_without_metadata_or_cut_short_is_refused_not_guessed() {
        let crc = record(4, 0, &[]);
        assert!(parse_head(&crc).is_err());
        let mut seg = crc.clone();
        seg.extend(record(1, 1, &metadata(5, 6)));
        // Cut anywhere: an error, or (cut only in the padding after the
        // complete record) the whole identity, never a part of it.
        for cut in 0..seg.len() {
            match parse_head(&seg[..cut]) {
                Err(_) => {}
                Ok(id) => assert_eq!((id.member_id, id.cluster_id, cut > seg.len() - 8), (5, 6, true)),
            }
        }
        assert!(parse_head(&[0xff; 64]).is_err());
        assert!(parse_head(&[]).is_err());
        // A metadata record without a ClusterID.
        let mut half = Vec::new();
        put_varint(&mut half, 1 << 3);
        put_varint(&mut half, 9);
        let mut seg = crc;
        seg.extend(record(1, 1, &half));
        assert!(parse_head(&seg).unwrap_err().contains("ClusterID"));
    }
}
