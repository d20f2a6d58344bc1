//! Borrowing a CPU f32 tensor's elements, and wrapping a kernel's output as a tensor.

use candle_core::{CpuStorage, Device, Shape, Storage, StorageRef, Tensor};

use crate::{OpError, Result};

/// A contiguous CPU f32 tensor's elements, borrowed from its storage for as long as this lives.
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    /// Fails (naming `op` and `what`) unless `t` is a contiguous f32 tensor on the CPU.
    pub(crate) fn new(t: &'a Tensor, op: &'static str, what: &str) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(OpError::shape(op, format!("{what} must be contiguous for the fused CPU kernel")));
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            return Err(OpError::shape(op, format!("{what} must be a CPU f32 tensor, got {:?} on {:?}", t.dtype(), t.device())));
        }
        Ok(CpuF32 { storage, start, end })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => unreachable!("checked in CpuF32::new"),
        }
    }
}

/// A CPU f32 tensor made from a kernel's output buffer.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn borrows_the_elements_of_a_narrowed_tensor() {
        let t = tensor((0..12).map(|i| i as f32).collect(), (3, 4)).unwrap();
        let rows = t.narrow(0, 1, 2).unwrap();
        assert_eq!(CpuF32::new(&rows, "op", "x").unwrap().as_slice(), &[4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn refuses_strided_and_non_f32_tensors_naming_them() {
        let t = tensor((0..12).map(|i| i as f32).collect(), (3, 4)).unwrap();
        let err = CpuF32::new(&t.narrow(1, 1, 2).unwrap(), "op", "x").err().unwrap().to_string();
        assert!(err.contains("op: x must be contiguous"), "{err}");
        let err = CpuF32::new(&t.to_dtype(DType::F16).unwrap(), "op", "w").err().unwrap().to_string();
        assert!(err.contains("op: w must be a CPU f32 tensor, got F16"), "{err}");
    }
}
