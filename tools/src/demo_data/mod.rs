//! Demo data in the paper's dual-brain format, with answers a program can check.
//!
//! Each example is a function of `(seed, pattern, index)` alone, so a stream can resume at
//! any index and two runs with the same seed write the same file. The category mix is the
//! paper's: simple Q&A 30%, complex reasoning chains 25%, multi-turn 20%, mixed 25% ("mixed":
//! the conversation holds an earlier answer given without thinking, the response thinks).
//!
//! - [`cli`]: `asrl-tools demo-data` (a file at once, or live appends at a rate).
//! - `simple` / `chain`: the problem generators; `problem`: what they share.

mod chain;
pub mod cli;
mod problem;
mod simple;

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use chain::{chain, follow_up};
use problem::pick;
use simple::simple;

/// The example's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    SimpleQa,
    ReasoningChain,
    MultiTurn,
    Mixed,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Self::SimpleQa,
        Self::ReasoningChain,
        Self::MultiTurn,
        Self::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SimpleQa => "simple_qa",
            Self::ReasoningChain => "reasoning_chain",
            Self::MultiTurn => "multi_turn",
            Self::Mixed => "mixed",
        }
    }

    /// The paper's share of this category, in percent.
    pub fn percent(self) -> u32 {
        match self {
            Self::SimpleQa => 30,
            Self::ReasoningChain => 25,
            Self::MultiTurn => 20,
            Self::Mixed => 25,
        }
    }
}

/// The kind of problem (the `topic` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Arithmetic,
    Units,
    Comparison,
    Dates,
    Strings,
}

impl Topic {
    pub const ALL: [Topic; 5] = [
        Self::Arithmetic,
        Self::Units,
        Self::Comparison,
        Self::Dates,
        Self::Strings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Arithmetic => "arithmetic",
            Self::Units => "units",
            Self::Comparison => "comparison",
            Self::Dates => "dates",
            Self::Strings => "strings",
        }
    }
}

/// `--pattern`: one category or one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Category(Category),
    Topic(Topic),
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(c) = Category::ALL.into_iter().find(|c| c.name() == s) {
            return Ok(Pattern::Category(c));
        }
        if let Some(t) = Topic::ALL.into_iter().find(|t| t.name() == s) {
            return Ok(Pattern::Topic(t));
        }
        let names: Vec<&str> = Category::ALL
            .iter()
            .map(|c| c.name())
            .chain(Topic::ALL.iter().map(|t| t.name()))
            .collect();
        Err(format!(
            "unknown pattern {s:?} (one of: {})",
            names.join(", ")
        ))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Category(c) => f.write_str(c.name()),
            Pattern::Topic(t) => f.write_str(t.name()),
        }
    }
}

/// One generated example in the paper's JSONL fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoExample {
    pub id: String,
    pub context: String,
    pub response: String,
    pub answer: String,
    pub category: Category,
    pub topic: Topic,
}

impl DemoExample {
    /// `{"id","context","response","answer","type","topic"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "context": self.context,
            "response": self.response,
            "answer": self.answer,
            "type": self.category.name(),
            "topic": self.topic.name(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct DemoGenerator {
    seed: u64,
    pattern: Option<Pattern>,
}

impl DemoGenerator {
    pub fn new(seed: u64, pattern: Option<Pattern>) -> Self {
        Self { seed, pattern }
    }

    /// Example number `index` of this stream.
    pub fn example(&self, index: u64) -> DemoExample {
        let tag = self
            .pattern
            .map_or_else(|| "all".to_string(), |p| p.to_string());
        let mut h = Sha256::new();
        h.update(b"asrl-demo-v1\0");
        h.update(self.seed.to_le_bytes());
        h.update(tag.as_bytes());
        h.update(index.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(h.finalize().into());

        let category = match self.pattern {
            Some(Pattern::Category(c)) => c,
            _ => {
                let mut roll = rng.random_range(0..100);
                let mut chosen = Category::Mixed;
                for c in Category::ALL {
                    if roll < c.percent() {
                        chosen = c;
                        break;
                    }
                    roll -= c.percent();
                }
                chosen
            }
        };
        let topic = match self.pattern {
            Some(Pattern::Topic(t)) => t,
            _ => *pick(&mut rng, &Topic::ALL),
        };
        let (context, problem) = match category {
            Category::SimpleQa => {
                let p = simple(topic, &mut rng);
                (format!("User: {}", p.question), p)
            }
            Category::ReasoningChain => {
                let p = chain(topic, &mut rng);
                (format!("User: {}", p.question), p)
            }
            Category::MultiTurn => {
                let first = simple(topic, &mut rng);
                let p = follow_up(&first, &mut rng);
                (
                    format!(
                        "User: {}\nAssistant: {}\nUser: {}",
                        first.question, first.answer, p.question
                    ),
                    p,
                )
            }
            Category::Mixed => {
                let other = *pick(&mut rng, &Topic::ALL);
                let earlier = simple(other, &mut rng);
                let p = simple(topic, &mut rng);
                (
                    format!(
                        "User: {}\nAssistant: {}\nUser: {}",
                        earlier.question, earlier.answer, p.question
                    ),
                    p,
                )
            }
        };
        let response = format!(
            "<|thinking|>\n[LOGIC]\n{}\n[/LOGIC]\n[INTUITION]\n{}\n[/INTUITION]\n<|/thinking|>\n{}",
            problem.steps.join("\n"),
            problem.intuition,
            problem.answer
        );
        DemoExample {
            id: format!("demo-{}-{tag}-{index}", self.seed),
            context,
            response,
            answer: problem.answer,
            category,
            topic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse() {
        assert_eq!(
            "multi_turn".parse::<Pattern>(),
            Ok(Pattern::Category(Category::MultiTurn))
        );
        assert_eq!("dates".parse::<Pattern>(), Ok(Pattern::Topic(Topic::Dates)));
        assert!("nope".parse::<Pattern>().unwrap_err().contains("simple_qa"));
    }
}
