//! Train / validation / test membership from a hash of each example's identity, so a growing
//! dataset never moves an example between splits.

use super::example::Example;
use super::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Shares of train and validation; test gets the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitFractions {
    train: f64,
    val: f64,
}

impl SplitFractions {
    pub fn new(train: f64, val: f64) -> Result<Self, DataError> {
        let ok = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
        if !ok(train) || !ok(val) || train + val > 1.0 + 1e-9 {
            return Err(DataError::Config(format!(
                "train_fraction {train} and val_fraction {val} must lie in [0, 1] and sum to at most 1"
            )));
        }
        Ok(Self { train, val })
    }

    /// The split of `example`: its identity hash as a uniform number in [0, 1).
    pub fn split_of(&self, example: &Example) -> Split {
        let key = example.identity_key();
        let mut top = [0u8; 8];
        top.copy_from_slice(&key[..8]);
        let u = (u64::from_be_bytes(top) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.train {
            Split::Train
        } else if u < self.train + self.val {
            Split::Val
        } else {
            Split::Test
        }
    }
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
        }
    }
}
