//! The paper's format reward: +1 when the response carries both reasoning blocks, else −1.

use serde::Deserialize;

use super::answer::{THINK_CLOSE, THINK_OPEN};
use super::{parse_params, RewardError, RewardFn, RewardInput};

pub const LOGIC_OPEN: &str = "[LOGIC]";
pub const LOGIC_CLOSE: &str = "[/LOGIC]";
pub const INTUITION_OPEN: &str = "[INTUITION]";
pub const INTUITION_CLOSE: &str = "[/INTUITION]";

/// The format accuracy metric. True when the response starts with one
/// `<|thinking|>` ... `<|/thinking|>` block holding exactly `[LOGIC]` non-empty `[/LOGIC]`
/// then `[INTUITION]` non-empty `[/INTUITION]` (only whitespace between the pieces), and no
/// tag appears anywhere else: repeated, nested, unclosed or reordered tags fail.
pub fn format_ok_strict(text: &str) -> bool {
    const TAGS: [&str; 6] = [
        THINK_OPEN,
        THINK_CLOSE,
        LOGIC_OPEN,
        LOGIC_CLOSE,
        INTUITION_OPEN,
        INTUITION_CLOSE,
    ];
    if TAGS.iter().any(|tag| text.matches(tag).count() != 1) {
        return false;
    }
    let Some(rest) = text.trim_start().strip_prefix(THINK_OPEN) else {
        return false;
    };
    let Some((block, _answer)) = rest.split_once(THINK_CLOSE) else {
        return false;
    };
    let Some(rest) = block.trim_start().strip_prefix(LOGIC_OPEN) else {
        return false;
    };
    let Some((logic, rest)) = rest.split_once(LOGIC_CLOSE) else {
        return false;
    };
    let Some(rest) = rest.trim_start().strip_prefix(INTUITION_OPEN) else {
        return false;
    };
    let Some((intuition, tail)) = rest.split_once(INTUITION_CLOSE) else {
        return false;
    };
    !logic.trim().is_empty() && !intuition.trim().is_empty() && tail.trim().is_empty()
}

/// The paper's check: a `[LOGIC]` later closed by `[/LOGIC]` and an `[INTUITION]` later closed
/// by `[/INTUITION]`, anywhere in the text, in any order.
pub fn format_ok_lenient(text: &str) -> bool {
    let pair = |open: &str, close: &str| {
        text.find(open)
            .is_some_and(|start| text[start + open.len()..].contains(close))
    };
    pair(LOGIC_OPEN, LOGIC_CLOSE) && pair(INTUITION_OPEN, INTUITION_CLOSE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatMode {
    Strict,
    Lenient,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FormatParams {
    mode: FormatMode,
    ok: f64,
    not_ok: f64,
}

impl Default for FormatParams {
    fn default() -> Self {
        Self {
            mode: FormatMode::Strict,
            ok: 1.0,
            not_ok: -1.0,
        }
    }
}

/// `format`: params `mode` (`strict` default | `lenient`), `ok` (+1), `not_ok` (−1).
#[derive(Debug, Clone)]
pub struct FormatReward {
    pub mode: FormatMode,
    pub ok: f64,
    pub not_ok: f64,
}

impl FormatReward {
    pub fn new(mode: FormatMode) -> Self {
        Self {
            mode,
            ok: 1.0,
            not_ok: -1.0,
        }
    }

    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, RewardError> {
        let p: FormatParams = parse_params("format", params)?;
        Ok(Self {
            mode: p.mode,
            ok: p.ok,
            not_ok: p.not_ok,
        })
    }
}

impl RewardFn for FormatReward {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
        let ok = match self.mode {
            FormatMode::Strict => format_ok_strict(input.completion),
            FormatMode::Lenient => format_ok_lenient(input.completion),
        };
        Ok(if ok { self.ok } else { self.not_ok })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAPER: &str = "<|thinking|>\n[LOGIC]\nThe list has 3 items; 3 × 2 = 6.\n[/LOGIC]\n[INTUITION]\nDoubling a small list, about 6.\n[/INTUITION]\n<|/thinking|>\n6";

    fn both(text: &str) -> (bool, bool) {
        (format_ok_strict(text), format_ok_lenient(text))
    }

    #[test]
    fn paper_example_passes_both() {
        assert_eq!(both(PAPER), (true, true));
        assert_eq!(both(&format!("\n  {PAPER}")), (true, true));
    }

    #[test]
    fn missing_blocks_fail_both() {
        assert_eq!(both("6"), (false, false));
        assert_eq!(
            both("<|thinking|>\n[LOGIC]x[/LOGIC]\n<|/thinking|>\n6"),
            (false, false)
        );
        assert_eq!(both("[INTUITION]x[/INTUITION]"), (false, false));
    }

    #[test]
    fn missing_closing_tags() {
        assert_eq!(
            both("<|thinking|>\n[LOGIC]a\n[INTUITION]b[/INTUITION]\n<|/thinking|>\n6"),
            (false, false)
        );
        assert_eq!(
            both("<|thinking|>\n[LOGIC]a[/LOGIC]\n[INTUITION]b\n<|/thinking|>\n6"),
            (false, false)
        );
        // Blocks closed but not the thinking block: lenient (paper) passes, strict fails.
        assert_eq!(
            both("<|thinking|>\n[LOGIC]a[/LOGIC]\n[INTUITION]b[/INTUITION]\n6"),
            (false, true)
        );
        assert_eq!(
            both("[LOGIC]a[/LOGIC][INTUITION]b[/INTUITION]<|/thinking|>6"),
            (false, true)
        );
    }

    #[test]
    fn wrong_order() {
        let swapped = "<|thinking|>\n[INTUITION]b[/INTUITION]\n[LOGIC]a[/LOGIC]\n<|/thinking|>\n6";
        assert_eq!(both(swapped), (false, true));
        let close_before_open =
            "<|thinking|>[/LOGIC]a[LOGIC][INTUITION]b[/INTUITION]<|/thinking|>6";
        assert!(!format_ok_strict(close_before_open));
        assert!(!format_ok_strict(
            "<|/thinking|>[LOGIC]a[/LOGIC][INTUITION]b[/INTUITION]<|thinking|>6"
        ));
    }

    #[test]
    fn empty_blocks_and_stray_text_fail_strict() {
        assert!(!format_ok_strict(
            "<|thinking|>[LOGIC] [/LOGIC][INTUITION]b[/INTUITION]<|/thinking|>6"
        ));
        assert!(!format_ok_strict(
            "<|thinking|>[LOGIC]a[/LOGIC][INTUITION]\n[/INTUITION]<|/thinking|>6"
        ));
        assert!(!format_ok_strict(
            "<|thinking|>x[LOGIC]a[/LOGIC][INTUITION]b[/INTUITION]<|/thinking|>6"
        ));
        assert!(!format_ok_strict(
            "<|thinking|>[LOGIC]a[/LOGIC]x[INTUITION]b[/INTUITION]<|/thinking|>6"
        ));
        assert!(!format_ok_strict(
            "<|thinking|>[LOGIC]a[/LOGIC][INTUITION]b[/INTUITION]x<|/thinking|>6"
        ));
        assert!(!format_ok_strict(
            "preamble <|thinking|>[LOGIC]a[/LOGIC][INTUITION]b[/INTUITION]<|/thinking|>6"
        ));
    }

    #[test]
    fn tag_spam_earns_at_most_plus_one() {
        let spam = "[LOGIC][/LOGIC]".repeat(50) + &"[INTUITION][/INTUITION]".repeat(50);
        let spam_in_block = format!("<|thinking|>\n{spam}\n<|/thinking|>\n6");
        let nested =
            "<|thinking|>[LOGIC]a[LOGIC]b[/LOGIC][/LOGIC][INTUITION]c[/INTUITION]<|/thinking|>6";
        let inside = "<|thinking|>[LOGIC]a[INTUITION]b[/INTUITION][/LOGIC]<|/thinking|>6";
        let repeated_after = format!("{PAPER}\n[LOGIC]more[/LOGIC][INTUITION]more[/INTUITION]");
        let two_blocks = format!("{PAPER}\n{PAPER}");
        let strict = FormatReward::new(FormatMode::Strict);
        let lenient = FormatReward::new(FormatMode::Lenient);
        for text in [
            &spam,
            &spam_in_block,
            nested,
            inside,
            &repeated_after,
            &two_blocks,
        ] {
            assert!(
                !format_ok_strict(text),
                "strict accepted tag spam: {text:?}"
            );
            let input = RewardInput::new("", text, "6", "t");
            assert_eq!(strict.score(&input).unwrap(), -1.0);
            assert!(lenient.score(&input).unwrap() <= 1.0);
        }
        assert_eq!(
            lenient
                .score(&RewardInput::new("", &spam, "6", "t"))
                .unwrap(),
            1.0
        );
    }

    #[test]
    fn params() {
        let mut p = serde_json::Map::new();
        p.insert("mode".into(), "lenient".into());
        assert_eq!(
            FormatReward::from_params(&p).unwrap().mode,
            FormatMode::Lenient
        );
        p.insert("mdoe".into(), "strict".into());
        let err = FormatReward::from_params(&p).unwrap_err().to_string();
        assert!(err.contains("format") && err.contains("mdoe"), "{err}");
    }
}
