//! Lane-parallel reductions and a vectorised `exp`: libm's `expf` is scalar and would dominate
//! the softmax-heavy kernels (FlashAttention spends one `exp` per score). The 8 independent
//! accumulators let the compiler keep one SIMD register per reduction.

avx2_dispatch! {
    /// `xs[i] ← exp(a·xs[i] − shift)`, returning Σ of the new values. Arguments below about
    /// −87.3 (masked −∞ included) give exactly 0; NaN stays NaN.
    pub(crate) fn exp_affine_sum(xs: &mut [f32], a: f32, shift: f32) -> f32 => exp_affine_sum_impl
}

/// Σ a[i]·b[i] with 8 independent lanes (vectorisable, tree-like accuracy). Always inlined, so
/// a caller compiled with wider target features (the AVX2 decode attention) vectorises it with
/// them; the arithmetic and its order, and so the bits, stay the same.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max of a slice (−∞ when empty), 8 lanes at a time.
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let c = xs.chunks_exact(8);
    let tail = c.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for x in c {
        for l in 0..8 {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// Whether the CPU has AVX2 and FMA (checked once): the kernels' vectorised paths need both.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[inline(always)]
fn exp_affine_sum_impl(xs: &mut [f32], a: f32, shift: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        for l in 0..8 {
            let e = exp_lane(a * c[l] - shift);
            c[l] = e;
            acc[l] += e;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_lane(a * *x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// 1 / (1 + e^−x) with [`exp_lane`]: inlined into callers compiled for AVX2 it vectorises.
/// Saturates to exactly 1 above 88 and to ~6e-39 (not 0) below −88.
#[inline(always)]
pub(crate) fn sigmoid_lane(x: f32) -> f32 {
    1.0 / (1.0 + exp_lane(-x))
}

/// Cephes `expf`: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial, 2^n built in
/// the exponent bits. Branch-free so that it vectorises; relative error ~1e-7.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer that then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-88.0, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n = −127 (x ≲ −87.3) gives the bit pattern 0, i.e. exactly 0.
    let v = e * f32::from_bits(((ni + 127) as u32) << 23);
    if x.is_nan() {
        x
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        let mut xs: Vec<f32> = (0..20_001).map(|i| -87.0 + i as f32 * (174.0 / 20_000.0)).collect();
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        exp_affine_sum(&mut xs, 1.0, 0.0);
        for (g, w) in xs.iter().zip(&want) {
            worst = worst.max((g - w).abs() / w);
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        // The sum, over a range that does not overflow f32.
        let mut xs: Vec<f32> = (0..1001).map(|i| -20.0 + i as f32 * 0.03).collect();
        let want: f64 = xs.iter().map(|&x| (x as f64 * 0.5 - 1.0).exp()).sum();
        let sum = exp_affine_sum(&mut xs, 0.5, 1.0);
        assert!(((sum as f64 - want) / want).abs() < 1e-6, "{sum} vs {want}");
    }

    #[test]
    fn exp_edge_cases() {
        let mut xs = [f32::NEG_INFINITY, -1000.0, f32::NAN, 0.0, 2.0, -3.0, 1.0, 0.5, -0.25];
        let sum = exp_affine_sum(&mut xs, 2.0, 1.0);
        assert_eq!(&xs[..2], &[0.0, 0.0]);
        assert!(xs[2].is_nan() && sum.is_nan());
        for (g, x) in xs[3..].iter().zip([0.0f32, 2.0, -3.0, 1.0, 0.5, -0.25]) {
            let w = (2.0 * x - 1.0).exp();
            assert!((g - w).abs() <= 1e-6 * w, "{g} vs {w}");
        }
    }

    #[test]
    fn dot_and_max() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 - 9.0).collect();
        assert_eq!(dot(&a, &a), a.iter().map(|x| x * x).sum::<f32>());
        assert_eq!(max(&a), 9.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
