//! Adapter distribution: the learner splits one serialised adapter version (opaque safetensors
//! bytes from `LoraAdapter::to_safetensors_bytes`) into ≤ 1 MiB chunks; the worker reassembles
//! them, checking version, sizes, offsets and a checksum of the whole payload.
//!
//! The checksum is XXH3-128, not a cryptographic hash: TCP and HTTP/2 (and TLS where enabled)
//! already protect the bytes in transit, so this guards against our own bugs (a dropped, repeated
//! or misplaced chunk, a wrong version) at memory speed. SHA-256 of an 80 MB adapter cost
//! 35-90 ms on the dev box, most of the 100 ms push budget; XXH3-128 costs ~3 ms.

use std::time::Duration;

use asrl_proto::v1::learner_client::LearnerClient;
use asrl_proto::v1::{AdapterChunk, FetchAdapterRequest};
use bytes::Bytes;
use xxhash_rust::xxh3::{xxh3_128, Xxh3Default};

use super::client::{with_deadline, AuthChannel};
use super::ADAPTER_CHUNK_BYTES;
use crate::rollout::AdapterVersion;

/// Refuse to allocate for a payload announced larger than this (a 7B model's r=64 all-module
/// adapter in f32 is ≈ 0.6 GB).
pub const MAX_ADAPTER_BYTES: u64 = 4 << 30;

/// XXH3-128 (seed 0) of a payload in canonical byte order (high half first, big-endian), as
/// the `checksum` field carries it.
pub type Checksum = [u8; 16];

/// The checksum the wire carries for `bytes`.
pub fn checksum(bytes: &[u8]) -> Checksum {
    xxh3_128(bytes).to_be_bytes()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdapterTransferError {
    #[error("adapter stream ended before any chunk")]
    Empty,
    #[error("adapter chunk at offset {offset}: version {got}, expected {expected}")]
    VersionMismatch { offset: u64, expected: u64, got: u64 },
    #[error("adapter chunk at offset {offset}: field {field} changed within the stream")]
    Inconsistent { offset: u64, field: &'static str },
    #[error("adapter chunk at offset {got}: expected offset {expected} (chunks out of order or missing)")]
    Offset { expected: u64, got: u64 },
    #[error("adapter chunk at offset {offset}: {len} bytes exceeds the {max}-byte chunk limit")]
    ChunkTooLarge { offset: u64, len: usize, max: usize },
    #[error("adapter payload: {got} bytes received, total_size announced {expected}")]
    Size { expected: u64, got: u64 },
    #[error("adapter payload: total_size {0} exceeds the {MAX_ADAPTER_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("adapter chunk: checksum field has {0} bytes, expected 16 (XXH3-128)")]
    ChecksumLength(usize),
    #[error("adapter version {version}: XXH3-128 checksum mismatch (payload corrupted)")]
    Checksum { version: u64 },
}

/// One serialised adapter version, shared (cheaply cloned) by every worker download.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterPayload {
    pub version: AdapterVersion,
    pub bytes: Bytes,
    pub checksum: Checksum,
}

impl AdapterPayload {
    /// Hashes once; later chunking and serving never copy the bytes.
    pub fn new(version: AdapterVersion, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let checksum = checksum(&bytes);
        Self { version, bytes, checksum }
    }

    pub fn num_chunks(&self) -> usize {
        self.bytes.len().div_ceil(ADAPTER_CHUNK_BYTES).max(1)
    }

    /// Chunks that slice the shared buffer (no copy). An empty payload still yields one chunk
    /// so the receiver learns version and checksum.
    pub fn chunks(&self) -> impl Iterator<Item = AdapterChunk> + Send + 'static {
        let payload = self.clone();
        let total = payload.bytes.len();
        (0..payload.num_chunks()).map(move |i| {
            let start = i * ADAPTER_CHUNK_BYTES;
            let end = (start + ADAPTER_CHUNK_BYTES).min(total);
            AdapterChunk {
                version: payload.version.get(),
                total_size: total as u64,
                checksum: payload.checksum.to_vec(),
                offset: start as u64,
                data: payload.bytes.slice(start..end),
            }
        })
    }
}

/// Reassembles a chunk stream into one buffer sized from the first chunk, hashing each chunk
/// as it arrives so verification overlaps the transfer.
///
/// The buffer can be the previous payload's (see [`AdapterAssembler::with_buffer`] and
/// [`recycle_buffer`]): writing 80 MB into fresh memory cost 35-55 ms, mostly page faults, on
/// the dev box; into already-mapped memory ≤ 15 ms. (Fresh memory advised for transparent huge
/// pages was fast back to back but took 100-300 ms whenever the kernel had no free 2 MiB blocks
/// at hand, so it is not used.)
pub struct AdapterAssembler {
    /// [`AdapterVersion::NONE`]: any version (the latest was asked for).
    expected_version: AdapterVersion,
    /// Set by the first chunk.
    receiving: Option<Receiving>,
    hasher: Xxh3Default,
    /// The buffer to reassemble into, until the first chunk arrives.
    spare: Vec<u8>,
}

/// What the first chunk announced, and the bytes received so far.
struct Receiving {
    version: u64,
    total: u64,
    checksum: Checksum,
    buf: Vec<u8>,
}

impl AdapterAssembler {
    /// `expected_version`: the version asked for ([`AdapterVersion::NONE`] when asking for the latest).
    pub fn new(expected_version: AdapterVersion) -> Self {
        Self::with_buffer(expected_version, Vec::new())
    }

    /// Like [`Self::new`], reassembling into `buf` (its contents are discarded, its capacity
    /// reused when large enough).
    pub fn with_buffer(expected_version: AdapterVersion, mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self { expected_version, receiving: None, hasher: Xxh3Default::new(), spare: buf }
    }

    pub fn push(&mut self, chunk: &AdapterChunk) -> Result<(), AdapterTransferError> {
        let offset = chunk.offset;
        let r = match &mut self.receiving {
            Some(r) => r,
            None => {
                let expected = self.expected_version.get();
                if !self.expected_version.is_none() && expected != chunk.version {
                    return Err(AdapterTransferError::VersionMismatch { offset, expected, got: chunk.version });
                }
                if chunk.total_size > MAX_ADAPTER_BYTES {
                    return Err(AdapterTransferError::TooLarge(chunk.total_size));
                }
                let checksum: Checksum = chunk
                    .checksum
                    .as_slice()
                    .try_into()
                    .map_err(|_| AdapterTransferError::ChecksumLength(chunk.checksum.len()))?;
                let mut buf = std::mem::take(&mut self.spare);
                buf.reserve_exact(chunk.total_size as usize);
                self.receiving.insert(Receiving { version: chunk.version, total: chunk.total_size, checksum, buf })
            }
        };
        if chunk.version != r.version {
            return Err(AdapterTransferError::VersionMismatch { offset, expected: r.version, got: chunk.version });
        }
        if chunk.total_size != r.total {
            return Err(AdapterTransferError::Inconsistent { offset, field: "total_size" });
        }
        if chunk.checksum.as_slice() != r.checksum.as_slice() {
            return Err(AdapterTransferError::Inconsistent { offset, field: "checksum" });
        }
        let received = r.buf.len();
        if offset != received as u64 {
            return Err(AdapterTransferError::Offset { expected: received as u64, got: offset });
        }
        if chunk.data.len() > ADAPTER_CHUNK_BYTES {
            return Err(AdapterTransferError::ChunkTooLarge { offset, len: chunk.data.len(), max: ADAPTER_CHUNK_BYTES });
        }
        let end = received + chunk.data.len();
        if end as u64 > r.total {
            return Err(AdapterTransferError::Size { expected: r.total, got: end as u64 });
        }
        r.buf.extend_from_slice(&chunk.data);
        self.hasher.update(&chunk.data);
        Ok(())
    }

    pub fn finish(self) -> Result<AdapterPayload, AdapterTransferError> {
        let r = self.receiving.ok_or(AdapterTransferError::Empty)?;
        if r.buf.len() as u64 != r.total {
            return Err(AdapterTransferError::Size { expected: r.total, got: r.buf.len() as u64 });
        }
        if self.hasher.digest128().to_be_bytes() != r.checksum {
            return Err(AdapterTransferError::Checksum { version: r.version });
        }
        Ok(AdapterPayload { version: AdapterVersion::new(r.version), bytes: Bytes::from(r.buf), checksum: r.checksum })
    }
}

/// The buffer behind a payload's bytes, for the next [`AdapterAssembler::with_buffer`] /
/// [`fetch_adapter_into`], when nothing else still shares it (otherwise an empty `Vec`).
pub fn recycle_buffer(bytes: Bytes) -> Vec<u8> {
    bytes.try_into_mut().map(Vec::from).unwrap_or_default()
}

/// Why a download failed: the call (transient or not) or the content.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("FetchAdapter call: {0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Transfer(#[from] AdapterTransferError),
}

/// Downloads one adapter version ([`AdapterVersion::NONE`]: the latest) into memory, verified.
pub async fn fetch_adapter(
    client: &mut LearnerClient<AuthChannel>,
    worker_id: u64,
    version: AdapterVersion,
    deadline: Duration,
) -> Result<AdapterPayload, FetchError> {
    fetch_adapter_into(client, worker_id, version, deadline, Vec::new()).await
}

/// [`fetch_adapter`] reassembling into `buf` (e.g. the previous adapter's, from
/// [`recycle_buffer`]), whose pages are already mapped.
pub async fn fetch_adapter_into(
    client: &mut LearnerClient<AuthChannel>,
    worker_id: u64,
    version: AdapterVersion,
    deadline: Duration,
    buf: Vec<u8>,
) -> Result<AdapterPayload, FetchError> {
    let request = with_deadline(FetchAdapterRequest { worker_id, version: version.get() }, deadline);
    let mut stream = client.fetch_adapter(request).await?.into_inner();
    let mut assembler = AdapterAssembler::with_buffer(version, buf);
    while let Some(chunk) = stream.message().await? {
        assembler.push(&chunk)?;
    }
    Ok(assembler.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> AdapterPayload {
        AdapterPayload::new(AdapterVersion::new(7), (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
    }

    fn reassemble(chunks: &[AdapterChunk], want: Option<u64>) -> Result<AdapterPayload, AdapterTransferError> {
        let mut a = AdapterAssembler::new(want.map_or(AdapterVersion::NONE, AdapterVersion::new));
        for c in chunks {
            a.push(c)?;
        }
        a.finish()
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        for len in [0, 1, ADAPTER_CHUNK_BYTES - 1, ADAPTER_CHUNK_BYTES, ADAPTER_CHUNK_BYTES + 1, 3 * ADAPTER_CHUNK_BYTES + 17] {
            let p = payload(len);
            let chunks: Vec<_> = p.chunks().collect();
            assert_eq!(chunks.len(), len.div_ceil(ADAPTER_CHUNK_BYTES).max(1));
            assert!(chunks.iter().all(|c| c.data.len() <= ADAPTER_CHUNK_BYTES));
            assert_eq!(reassemble(&chunks, Some(7)).unwrap(), p, "len {len}");
        }
    }

    #[test]
    fn detects_corruption_and_inconsistency() {
        let p = payload(2 * ADAPTER_CHUNK_BYTES + 5);
        let good: Vec<_> = p.chunks().collect();

        let mut flipped = good.clone();
        let mut d = flipped[1].data.to_vec();
        d[10] ^= 0xff;
        flipped[1].data = d.into();
        assert_eq!(reassemble(&flipped, Some(7)), Err(AdapterTransferError::Checksum { version: 7 }));

        assert!(matches!(reassemble(&good, Some(8)), Err(AdapterTransferError::VersionMismatch { expected: 8, got: 7, .. })));

        let mut mixed = good.clone();
        mixed[2].version = 8;
        assert!(matches!(reassemble(&mixed, None), Err(AdapterTransferError::VersionMismatch { .. })));

        let mut missing = good.clone();
        missing.remove(1);
        assert!(matches!(reassemble(&missing, None), Err(AdapterTransferError::Offset { .. })));

        let truncated = &good[..2];
        assert!(matches!(reassemble(truncated, None), Err(AdapterTransferError::Size { .. })));

        let mut resized = good.clone();
        resized[1].total_size += 1;
        assert!(matches!(reassemble(&resized, None), Err(AdapterTransferError::Inconsistent { field: "total_size", .. })));

        let mut huge = good.clone();
        huge[0].total_size = MAX_ADAPTER_BYTES + 1;
        assert_eq!(reassemble(&huge, None), Err(AdapterTransferError::TooLarge(MAX_ADAPTER_BYTES + 1)));

        assert_eq!(reassemble(&[], None), Err(AdapterTransferError::Empty));

        let mut other_sum = good.clone();
        other_sum[1].checksum[0] ^= 1;
        assert!(matches!(reassemble(&other_sum, None), Err(AdapterTransferError::Inconsistent { field: "checksum", .. })));

        // A peer still sending the old 32-byte SHA-256 field is refused, not misread.
        let mut sha_sized = good.clone();
        sha_sized.iter_mut().for_each(|c| c.checksum = vec![0; 32]);
        assert_eq!(reassemble(&sha_sized, None), Err(AdapterTransferError::ChecksumLength(32)));

        let mut forged = good;
        forged.iter_mut().for_each(|c| c.checksum = vec![0; 16]);
        assert_eq!(reassemble(&forged, None), Err(AdapterTransferError::Checksum { version: 7 }));
    }

    #[test]
    fn reassembles_into_a_recycled_buffer() {
        let big = payload(3 * ADAPTER_CHUNK_BYTES + 17);
        let first = reassemble(&big.chunks().collect::<Vec<_>>(), Some(7)).unwrap();
        let buf = recycle_buffer(first.bytes);
        assert!(buf.capacity() >= big.bytes.len());
        let ptr = buf.as_ptr();

        let small = AdapterPayload::new(AdapterVersion::new(8), (0..ADAPTER_CHUNK_BYTES + 3).map(|i| (i % 7) as u8).collect::<Vec<u8>>());
        let mut a = AdapterAssembler::with_buffer(AdapterVersion::new(8), buf);
        for c in small.chunks() {
            a.push(&c).unwrap();
        }
        let second = a.finish().unwrap();
        assert_eq!(second, small, "old contents must not leak into the new payload");
        assert_eq!(second.bytes.as_ptr(), ptr, "the recycled allocation is reused");

        // Still shared (e.g. the engine kept a reference): not recycled.
        let shared = second.bytes.clone();
        assert!(recycle_buffer(second.bytes).is_empty());
        assert_eq!(shared, small.bytes);
    }

    /// The wire value is XXH3-128 in canonical (xxhsum) byte order, so a non-Rust peer can
    /// check it; expected values from libxxhash 0.8.1 (`XXH3_128bits`, high half first).
    #[test]
    fn checksum_is_canonical_xxh3_128() {
        let hex = |c: Checksum| c.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(checksum(b"")), "99aa06d3014798d86001c324468d497f");
        let long: Vec<u8> = (0..5000).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(hex(checksum(&long)), "5f50ca3aad5b935da092d73116291201");
    }
}
