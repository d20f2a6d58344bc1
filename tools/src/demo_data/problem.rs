//! What every problem generator shares: the problem and the state a follow-up builds on, the
//! word lists, and small text helpers.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A question with its worked steps and the state a follow-up question builds on.
pub(super) struct Problem {
    pub(super) question: String,
    pub(super) steps: Vec<String>,
    pub(super) intuition: String,
    pub(super) answer: String,
    pub(super) state: State,
}

pub(super) enum State {
    Number(i64),
    /// A quantity: value in thousandths and its unit.
    Quantity(i64, &'static str),
    Pair {
        larger: String,
        smaller: String,
    },
    Weekday(usize),
    Days(i64),
    Reversed(String),
    Word(String),
}

pub(super) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub(super) const NAMES: [&str; 10] = [
    "Sam", "Ana", "Leo", "Mia", "Raj", "Eva", "Tom", "Zoe", "Ken", "Ida",
];
pub(super) const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// (name, days); February is never a start month, so leap years never matter.
pub(super) const MONTHS: [(&str, i64); 12] = [
    ("January", 31),
    ("February", 28),
    ("March", 31),
    ("April", 30),
    ("May", 31),
    ("June", 30),
    ("July", 31),
    ("August", 31),
    ("September", 30),
    ("October", 31),
    ("November", 30),
    ("December", 31),
];
pub(super) const WORDS: [&str; 107] = [
    "planet", "garden", "river", "stone", "candle", "window", "orange", "pencil", "forest",
    "bridge", "castle", "rocket", "silver", "butter", "winter", "summer", "banana", "letter",
    "mirror", "button", "coffee", "dragon", "kitten", "pepper", "rabbit", "tunnel", "yellow",
    "cotton", "marble", "puzzle", "anchor", "basket", "beacon", "blanket", "bottle", "breeze",
    "cactus", "camera", "carpet", "cereal", "cherry", "circle", "cloud", "copper", "corner",
    "cousin", "crayon", "desert", "dinner", "doctor", "donkey", "engine", "fabric", "falcon",
    "feather", "finger", "flower", "galaxy", "ginger", "guitar", "hammer", "harbor", "helmet",
    "insect", "island", "jacket", "jungle", "kettle", "ladder", "lemon", "lizard", "magnet",
    "meadow", "monkey", "needle", "noodle", "ocean", "paddle", "parrot", "pillow", "pirate",
    "pocket", "potato", "pumpkin", "quiet", "radio", "rainbow", "ribbon", "saddle", "salmon",
    "shadow", "shovel", "spider", "spring", "sugar", "table", "ticket", "tiger", "tomato",
    "turtle", "valley", "velvet", "violin", "wallet", "walnut", "wizard", "zebra",
];
/// (big unit, small unit, small units per big unit).
pub(super) const UNITS: [(&str, &str, i64); 6] = [
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("kg", "g", 1000),
    ("h", "min", 60),
    ("min", "s", 60),
    ("L", "mL", 1000),
];

/// `value / scale` as a short decimal: 3500/1000 → "3.5", 2000/1000 → "2".
pub(super) fn decimal(value: i64, scale: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let (v, s) = (value.abs(), scale);
    let whole = v / s;
    let mut frac = v % s;
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let mut width = s.to_string().len() - 1;
    let mut digits = String::new();
    // Only powers of ten reach here (callers scale by 10/100/1000).
    while width > 0 {
        let unit = 10i64.pow(width as u32 - 1);
        digits.push(char::from(b'0' + (frac / unit) as u8));
        frac %= unit;
        width -= 1;
    }
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// "What is 3 + 4?" in one of a few phrasings.
pub(super) fn ask(rng: &mut ChaCha8Rng, expression: &str) -> String {
    match rng.random_range(0..3) {
        0 => format!("What is {expression}?"),
        1 => format!("Compute {expression}."),
        _ => format!("Calculate {expression}."),
    }
}

pub(super) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub(super) fn letters(word: &str) -> String {
    word.chars().map(String::from).collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(decimal(3500, 1000), "3.5");
        assert_eq!(decimal(2000, 1000), "2");
        assert_eq!(decimal(1250, 1000), "1.25");
        assert_eq!(decimal(15, 10), "1.5");
        assert_eq!(decimal(7, 1000), "0.007");
    }
}
