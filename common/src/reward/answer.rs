//! Where a response's final answer is, and how answers are compared.

/// Opens the thinking block.
pub const THINK_OPEN: &str = "<|thinking|>";
/// Closes the thinking block; the final answer follows it.
pub const THINK_CLOSE: &str = "<|/thinking|>";

/// The final answer: the text after the last `<|/thinking|>`, trimmed; the whole response
/// (trimmed) when it has no thinking block; empty when a thinking block was opened but never
/// closed (a truncated generation has not answered yet, whatever its thinking contains).
pub fn final_answer(response: &str) -> &str {
    if let Some(pos) = response.rfind(THINK_CLOSE) {
        response[pos + THINK_CLOSE.len()..].trim()
    } else if response.contains(THINK_OPEN) {
        ""
    } else {
        response.trim()
    }
}

/// Answer normalisation for comparisons: trim, collapse whitespace runs to one space,
/// lowercase, drop one trailing period.
pub fn normalize_answer(text: &str) -> String {
    let collapsed = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    match collapsed.strip_suffix('.') {
        Some(stripped) => stripped.trim_end().to_string(),
        None => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_answer_after_thinking_block() {
        let r = "<|thinking|>\n[LOGIC]2+2=4[/LOGIC]\n[INTUITION]small[/INTUITION]\n<|/thinking|>\n  4 \n";
        assert_eq!(final_answer(r), "4");
        assert_eq!(final_answer("  just text "), "just text");
        assert_eq!(final_answer("<|thinking|>\n[LOGIC]the answer is 4"), "");
        // Several blocks: the answer follows the last one.
        assert_eq!(
            final_answer("<|thinking|>a<|/thinking|>x<|thinking|>b<|/thinking|> y"),
            "y"
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_answer("  The   Answer\tIS 4. "),
            "the answer is 4"
        );
        assert_eq!(normalize_answer("3.5"), "3.5");
        assert_eq!(normalize_answer("Paris."), "paris");
        assert_eq!(normalize_answer(""), "");
    }
}
