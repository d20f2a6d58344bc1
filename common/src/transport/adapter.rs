//! Adapter distribution: the learner splits one serialised adapter version (opaque safetensors
//! bytes from `LoraAdapter::to_safetensors_bytes`) into ≤ 1 MiB chunks; the worker reassembles
//! them, checking version, sizes, offsets and the SHA-256 of the whole payload.

use std::time::Duration;

use asrl_proto::v1::learner_client::LearnerClient;
use asrl_proto::v1::{AdapterChunk, FetchAdapterRequest};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::client::{with_deadline, AuthChannel};
use super::ADAPTER_CHUNK_BYTES;

/// Refuse to allocate for a payload announced larger than this (a 7B model's r=64 all-module
/// adapter in f32 is ≈ 0.6 GB).
pub const MAX_ADAPTER_BYTES: u64 = 4 << 30;

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
    #[error("adapter chunk: sha256 field has {0} bytes, expected 32")]
    ChecksumLength(usize),
    #[error("adapter version {version}: sha256 mismatch (payload corrupted in transit)")]
    Checksum { version: u64 },
}

/// One serialised adapter version, shared (cheaply cloned) by every worker download.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterPayload {
    pub version: u64,
    pub bytes: Bytes,
    pub sha256: [u8; 32],
}

impl AdapterPayload {
    /// Hashes once; later chunking and serving never copy the bytes.
    pub fn new(version: u64, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let sha256 = Sha256::digest(&bytes).into();
        Self { version, bytes, sha256 }
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
                version: payload.version,
                total_size: total as u64,
                sha256: payload.sha256.to_vec(),
                offset: start as u64,
                data: payload.bytes.slice(start..end),
            }
        })
    }
}

/// Reassembles a chunk stream, hashing as chunks arrive so verification overlaps the transfer.
pub struct AdapterAssembler {
    expected_version: Option<u64>,
    header: Option<(u64, u64, [u8; 32])>,
    buf: Vec<u8>,
    hasher: Sha256,
}

impl AdapterAssembler {
    /// `expected_version`: the version asked for (`None` when asking for the latest).
    pub fn new(expected_version: Option<u64>) -> Self {
        Self { expected_version, header: None, buf: Vec::new(), hasher: Sha256::new() }
    }

    pub fn push(&mut self, chunk: &AdapterChunk) -> Result<(), AdapterTransferError> {
        let offset = chunk.offset;
        let (version, total, sha) = match self.header {
            Some(h) => h,
            None => {
                if let Some(v) = self.expected_version {
                    if v != chunk.version {
                        return Err(AdapterTransferError::VersionMismatch { offset, expected: v, got: chunk.version });
                    }
                }
                if chunk.total_size > MAX_ADAPTER_BYTES {
                    return Err(AdapterTransferError::TooLarge(chunk.total_size));
                }
                let sha: [u8; 32] = chunk
                    .sha256
                    .as_slice()
                    .try_into()
                    .map_err(|_| AdapterTransferError::ChecksumLength(chunk.sha256.len()))?;
                self.buf.reserve_exact(chunk.total_size as usize);
                let h = (chunk.version, chunk.total_size, sha);
                self.header = Some(h);
                h
            }
        };
        if chunk.version != version {
            return Err(AdapterTransferError::VersionMismatch { offset, expected: version, got: chunk.version });
        }
        if chunk.total_size != total {
            return Err(AdapterTransferError::Inconsistent { offset, field: "total_size" });
        }
        if chunk.sha256.as_slice() != sha.as_slice() {
            return Err(AdapterTransferError::Inconsistent { offset, field: "sha256" });
        }
        let received = self.buf.len() as u64;
        if offset != received {
            return Err(AdapterTransferError::Offset { expected: received, got: offset });
        }
        if chunk.data.len() > ADAPTER_CHUNK_BYTES {
            return Err(AdapterTransferError::ChunkTooLarge { offset, len: chunk.data.len(), max: ADAPTER_CHUNK_BYTES });
        }
        let new_len = received + chunk.data.len() as u64;
        if new_len > total {
            return Err(AdapterTransferError::Size { expected: total, got: new_len });
        }
        self.hasher.update(&chunk.data);
        self.buf.extend_from_slice(&chunk.data);
        Ok(())
    }

    pub fn finish(self) -> Result<AdapterPayload, AdapterTransferError> {
        let (version, total, sha) = self.header.ok_or(AdapterTransferError::Empty)?;
        if self.buf.len() as u64 != total {
            return Err(AdapterTransferError::Size { expected: total, got: self.buf.len() as u64 });
        }
        let got: [u8; 32] = self.hasher.finalize().into();
        if got != sha {
            return Err(AdapterTransferError::Checksum { version });
        }
        Ok(AdapterPayload { version, bytes: Bytes::from(self.buf), sha256: sha })
    }
}

/// Why a download failed: the call (transient or not) or the content.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("FetchAdapter call: {0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Transfer(#[from] AdapterTransferError),
}

/// Downloads one adapter version (`version` 0: the latest) into memory, verified.
pub async fn fetch_adapter(
    client: &mut LearnerClient<AuthChannel>,
    worker_id: u64,
    version: u64,
    deadline: Duration,
) -> Result<AdapterPayload, FetchError> {
    let request = with_deadline(FetchAdapterRequest { worker_id, version }, deadline);
    let mut stream = client.fetch_adapter(request).await?.into_inner();
    let mut assembler = AdapterAssembler::new((version != 0).then_some(version));
    while let Some(chunk) = stream.message().await? {
        assembler.push(&chunk)?;
    }
    Ok(assembler.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> AdapterPayload {
        AdapterPayload::new(7, (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
    }

    fn reassemble(chunks: &[AdapterChunk], want: Option<u64>) -> Result<AdapterPayload, AdapterTransferError> {
        let mut a = AdapterAssembler::new(want);
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
    }
}
