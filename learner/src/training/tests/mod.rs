//! Trainer tests: parity of the losses and the optimiser against the torch/TRL fixtures, and
//! trainer behaviour on a tiny bigram policy.

mod bigram;
mod checkpoints;
mod optim;
mod parity;
mod trainer;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-7;
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

fn assert_scalar(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-5 * want.abs() + 1e-7, "{what}: got {got}, want {want}");
}
