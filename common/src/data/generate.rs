//! Demo data in the paper's dual-brain format, with answers a program can check.
//!
//! Each example is a function of `(seed, pattern, index)` alone, so a stream can resume at
//! any index and two runs with the same seed write the same file. The category mix is the
//! paper's: simple Q&A 30%, complex reasoning chains 25%, multi-turn 20%, mixed 25% ("mixed":
//! the conversation holds an earlier answer given without thinking, the response thinks).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

/// A question with its worked steps and the state a follow-up question builds on.
struct Problem {
    question: String,
    steps: Vec<String>,
    intuition: String,
    answer: String,
    state: State,
}

enum State {
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

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

const NAMES: [&str; 10] = [
    "Sam", "Ana", "Leo", "Mia", "Raj", "Eva", "Tom", "Zoe", "Ken", "Ida",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// (name, days); February is never a start month, so leap years never matter.
const MONTHS: [(&str, i64); 12] = [
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
const WORDS: [&str; 107] = [
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
const UNITS: [(&str, &str, i64); 6] = [
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("kg", "g", 1000),
    ("h", "min", 60),
    ("min", "s", 60),
    ("L", "mL", 1000),
];

/// `value / scale` as a short decimal: 3500/1000 → "3.5", 2000/1000 → "2".
fn decimal(value: i64, scale: i64) -> String {
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
fn ask(rng: &mut ChaCha8Rng, expression: &str) -> String {
    match rng.random_range(0..3) {
        0 => format!("What is {expression}?"),
        1 => format!("Compute {expression}."),
        _ => format!("Calculate {expression}."),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn letters(word: &str) -> String {
    word.chars().map(String::from).collect::<Vec<_>>().join("-")
}

fn simple(topic: Topic, rng: &mut ChaCha8Rng) -> Problem {
    match topic {
        Topic::Arithmetic => match rng.random_range(0..3) {
            0 => {
                let (a, b) = (rng.random_range(12..90i64), rng.random_range(12..90i64));
                let (tens, ones) = (a / 10 * 10 + b / 10 * 10, a % 10 + b % 10);
                Problem {
                    question: ask(rng, &format!("{a} + {b}")),
                    steps: vec![
                        format!(
                            "Tens: {} + {} = {tens}. Ones: {} + {} = {ones}.",
                            a / 10 * 10,
                            b / 10 * 10,
                            a % 10,
                            b % 10
                        ),
                        format!("{tens} + {ones} = {}.", a + b),
                    ],
                    intuition: format!(
                        "Two numbers under 100; the sum is near {}.",
                        (a + b + 5) / 10 * 10
                    ),
                    answer: (a + b).to_string(),
                    state: State::Number(a + b),
                }
            }
            1 => {
                let a = rng.random_range(40..100i64);
                let b = rng.random_range(11..a - 5);
                let mid = a - b / 10 * 10;
                Problem {
                    question: ask(rng, &format!("{a} - {b}")),
                    steps: vec![
                        format!("{a} - {} = {mid}.", b / 10 * 10),
                        format!("{mid} - {} = {}.", b % 10, a - b),
                    ],
                    intuition: format!("Take away the tens, then the ones; a bit under {}.", mid),
                    answer: (a - b).to_string(),
                    state: State::Number(a - b),
                }
            }
            _ => {
                let mut a = rng.random_range(11..40i64);
                if a % 10 == 0 {
                    a += 1;
                }
                let b = rng.random_range(3..10i64);
                Problem {
                    question: ask(rng, &format!("{a} * {b}")),
                    steps: vec![
                        format!("{a} * {b} = {} * {b} + {} * {b}.", a / 10 * 10, a % 10),
                        format!("{} + {} = {}.", a / 10 * 10 * b, a % 10 * b, a * b),
                    ],
                    intuition: format!(
                        "Close to {} * {b} = {}.",
                        (a + 5) / 10 * 10,
                        (a + 5) / 10 * 10 * b
                    ),
                    answer: (a * b).to_string(),
                    state: State::Number(a * b),
                }
            }
        },
        Topic::Units => {
            let (big, small, factor) = *pick(rng, &UNITS);
            let tenths = rng.random_range(2..100i64) * 5; // 1.0 .. 49.5 in halves
            let big_value = decimal(tenths, 10);
            let small_value = tenths * factor / 10;
            if rng.random_bool(0.5) {
                Problem {
                    question: format!("Convert {big_value} {big} to {small}."),
                    steps: vec![
                        format!("1 {big} = {factor} {small}."),
                        format!("{big_value} * {factor} = {small_value}."),
                    ],
                    intuition: "Smaller units, so the number grows.".into(),
                    answer: format!("{small_value} {small}"),
                    state: State::Quantity(small_value * 1000, small),
                }
            } else {
                Problem {
                    question: format!("Convert {small_value} {small} to {big}."),
                    steps: vec![
                        format!("1 {big} = {factor} {small}."),
                        format!("{small_value} / {factor} = {big_value}."),
                    ],
                    intuition: "Bigger units, so the number shrinks.".into(),
                    answer: format!("{big_value} {big}"),
                    state: State::Quantity(tenths * 100, big),
                }
            }
        }
        Topic::Comparison => {
            let (x, y, larger_first, steps, intuition) = if rng.random_bool(0.5) {
                let t = rng.random_range(1..10i64);
                let mut h = rng.random_range(10..100i64);
                while h / 10 == t || h % 10 == 0 {
                    h = rng.random_range(10..100i64);
                }
                let (x, y) = (format!("0.{t}"), format!("0.{h:02}"));
                let x_larger = t * 10 > h;
                let cmp = if x_larger { ">" } else { "<" };
                let steps = vec![format!("{x} = 0.{t}0."), format!("0.{t}0 {cmp} {y}.")];
                (
                    x,
                    y,
                    x_larger,
                    steps,
                    format!("The tenths digit decides: {t} vs {}.", h / 10),
                )
            } else {
                // Proper fractions with different values.
                let (a, b, c, d) = loop {
                    let (b, d) = (rng.random_range(2..10i64), rng.random_range(2..10i64));
                    let (a, c) = (rng.random_range(1..b), rng.random_range(1..d));
                    if a * d != c * b {
                        break (a, b, c, d);
                    }
                };
                let (x, y) = (format!("{a}/{b}"), format!("{c}/{d}"));
                let (l, r) = (a * d, c * b);
                let cmp = if l > r { ">" } else { "<" };
                let steps = vec![
                    format!("Cross-multiply: {a} * {d} = {l}, {c} * {b} = {r}."),
                    format!("{l} {cmp} {r}."),
                ];
                (
                    x,
                    y,
                    l > r,
                    steps,
                    "Cross-multiplying compares over a common denominator.".to_string(),
                )
            };
            let (larger, smaller) = if larger_first {
                (x.clone(), y.clone())
            } else {
                (y.clone(), x.clone())
            };
            let (p, q) = if rng.random_bool(0.5) { (x, y) } else { (y, x) };
            let mut steps = steps;
            steps.push(format!("So {larger} is larger."));
            Problem {
                question: format!("Which is larger, {p} or {q}?"),
                steps,
                intuition,
                answer: larger.clone(),
                state: State::Pair { larger, smaller },
            }
        }
        Topic::Dates => {
            if rng.random_bool(0.5) {
                let start = rng.random_range(0..7usize);
                let n = rng.random_range(2..100usize);
                let end = (start + n) % 7;
                Problem {
                    question: format!(
                        "What day of the week is {n} days after {}?",
                        WEEKDAYS[start]
                    ),
                    steps: vec![
                        format!("{n} = {} * 7 + {}.", n / 7, n % 7),
                        format!("{} + {} days = {}.", WEEKDAYS[start], n % 7, WEEKDAYS[end]),
                    ],
                    intuition: "Whole weeks do not change the weekday.".into(),
                    answer: WEEKDAYS[end].into(),
                    state: State::Weekday(end),
                }
            } else {
                let m = *pick(rng, &[0usize, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
                let (month, len) = MONTHS[m];
                let next = MONTHS[m + 1].0;
                let d1 = rng.random_range(1..len);
                let d2 = rng.random_range(1..29i64);
                let days = len - d1 + d2;
                Problem {
                    question: format!("How many days are there from {month} {d1} to {next} {d2}?"),
                    steps: vec![
                        format!(
                            "{month} has {len} days: {len} - {d1} = {} days to {month} {len}.",
                            len - d1
                        ),
                        format!("{} + {d2} = {days}.", len - d1),
                    ],
                    intuition: "About one month, so around 30 days.".into(),
                    answer: format!("{days} days"),
                    state: State::Days(days),
                }
            }
        }
        Topic::Strings => {
            let word = *pick(rng, &WORDS);
            if rng.random_bool(0.5) {
                let reversed: String = word.chars().rev().collect();
                Problem {
                    question: match rng.random_range(0..3) {
                        0 => format!("Reverse the word \"{word}\"."),
                        1 => format!("Spell \"{word}\" backwards."),
                        _ => format!("Write \"{word}\" in reverse order."),
                    },
                    steps: vec![
                        format!("Letters: {}.", letters(word)),
                        format!("Backwards: {}.", letters(&reversed)),
                    ],
                    intuition: format!("The last letter, {}, comes first.", &reversed[..1]),
                    answer: reversed.clone(),
                    state: State::Reversed(reversed),
                }
            } else {
                let chars: Vec<char> = word.chars().collect();
                let c = *pick(rng, &chars);
                let positions: Vec<String> = chars
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x == c)
                    .map(|(i, _)| (i + 1).to_string())
                    .collect();
                Problem {
                    question: format!(
                        "How many times does the letter \"{c}\" appear in \"{word}\"?"
                    ),
                    steps: vec![
                        format!("Letters: {}.", letters(word)),
                        format!(
                            "\"{c}\" is at position{} {}.",
                            if positions.len() > 1 { "s" } else { "" },
                            positions.join(", ")
                        ),
                    ],
                    intuition: format!("A short word; \"{c}\" is not rare in it."),
                    answer: positions.len().to_string(),
                    state: State::Word(word.to_string()),
                }
            }
        }
    }
}

fn chain(topic: Topic, rng: &mut ChaCha8Rng) -> Problem {
    match topic {
        Topic::Arithmetic => {
            let name = *pick(rng, &NAMES);
            let item = *pick(
                rng,
                &["pens", "cups", "books", "stamps", "apples", "candles"],
            );
            let (price, n) = (rng.random_range(2..16i64), rng.random_range(2..10i64));
            let cost = price * n;
            let paid = (cost / 10 + 1) * 10 + 10 * rng.random_range(0..3i64);
            let change = paid - cost;
            Problem {
                question: format!("{item} cost {price} dollars each. {name} buys {n} {item} and pays with {paid} dollars. How much change is left?")
                    .replacen(item, &capitalize(item), 1),
                steps: vec![format!("{n} * {price} = {cost} dollars for the {item}."), format!("{paid} - {cost} = {change} dollars back.")],
                intuition: format!("{paid} is a bit more than {cost}, so the change is small."),
                answer: format!("{change} dollars"),
                state: State::Number(change),
            }
        }
        Topic::Units => {
            let name = *pick(rng, &NAMES);
            let lap = *pick(rng, &[100i64, 200, 250, 300, 400, 500, 600, 800]);
            let n = rng.random_range(2..17i64);
            let total = lap * n;
            let km = decimal(total, 1000);
            Problem {
                question: format!(
                    "A lap of the track is {lap} m. {name} runs {n} laps. How many km is that?"
                ),
                steps: vec![
                    format!("{n} * {lap} = {total} m."),
                    format!("{total} / 1000 = {km} km."),
                ],
                intuition: format!("{n} laps of {lap} m is a few km at most."),
                answer: format!("{km} km"),
                state: State::Quantity(total, "m"),
            }
        }
        Topic::Comparison => {
            let (a, b) = (rng.random_range(2..9i64), rng.random_range(3..13i64));
            let (mut c, d) = (rng.random_range(2..9i64), rng.random_range(3..13i64));
            if a * b == c * d {
                c += 1;
            }
            let (ann, ben) = (a * b, c * d);
            let (winner, loser) = if ann > ben {
                ("Ann", "Ben")
            } else {
                ("Ben", "Ann")
            };
            Problem {
                question: format!("Ann has {a} boxes of {b} apples. Ben has {c} boxes of {d} apples. Who has more apples?"),
                steps: vec![
                    format!("Ann: {a} * {b} = {ann}."),
                    format!("Ben: {c} * {d} = {ben}."),
                    format!("{} > {}, so {winner} has more.", ann.max(ben), ann.min(ben)),
                ],
                intuition: "Compare the totals, not the box counts.".into(),
                answer: winner.into(),
                state: State::Pair { larger: winner.into(), smaller: loser.into() },
            }
        }
        Topic::Dates => {
            let today = rng.random_range(0..7usize);
            let tomorrow = (today + 1) % 7;
            let n = rng.random_range(2..60usize);
            let end = (tomorrow + n) % 7;
            Problem {
                question: format!(
                    "Today is {}. What day of the week is it {n} days after tomorrow?",
                    WEEKDAYS[today]
                ),
                steps: vec![
                    format!("Tomorrow is {}.", WEEKDAYS[tomorrow]),
                    format!("{n} = {} * 7 + {}.", n / 7, n % 7),
                    format!(
                        "{} + {} days = {}.",
                        WEEKDAYS[tomorrow],
                        n % 7,
                        WEEKDAYS[end]
                    ),
                ],
                intuition: "Only the days left over after whole weeks matter.".into(),
                answer: WEEKDAYS[end].into(),
                state: State::Weekday(end),
            }
        }
        Topic::Strings => {
            let word = *pick(rng, &WORDS);
            if rng.random_bool(0.5) {
                let other = *pick(rng, &WORDS);
                let (n1, n2) = (word.chars().count(), other.chars().count());
                return Problem {
                    question: format!(
                        "How many letters do \"{word}\" and \"{other}\" have together?"
                    ),
                    steps: vec![
                        format!("{word}: {}, so {n1}.", letters(word)),
                        format!("{other}: {}, so {n2}.", letters(other)),
                        format!("{n1} + {n2} = {}.", n1 + n2),
                    ],
                    intuition: "Two short words, about a dozen letters.".into(),
                    answer: (n1 + n2).to_string(),
                    state: State::Number((n1 + n2) as i64),
                };
            }
            let reversed: String = word.chars().rev().collect();
            let k = rng.random_range(2..5usize);
            let head: String = reversed.chars().take(k).collect();
            Problem {
                question: format!(
                    "Reverse the word \"{word}\" and keep only the first {k} letters."
                ),
                steps: vec![
                    format!("Letters: {}.", letters(word)),
                    format!("Reversed: {reversed}."),
                    format!("First {k}: {head}."),
                ],
                intuition: format!(
                    "The first {k} of the reverse are the last {k} of \"{word}\", backwards."
                ),
                answer: head.clone(),
                state: State::Reversed(head),
            }
        }
    }
}

fn follow_up(first: &Problem, rng: &mut ChaCha8Rng) -> Problem {
    match &first.state {
        State::Number(n) => {
            let k = rng.random_range(2..20i64);
            let (question, op, result) = match rng.random_range(0..3) {
                0 => (format!("Now add {k} to that."), format!("{n} + {k}"), n + k),
                1 => (
                    format!("Now subtract {k} from that."),
                    format!("{n} - {k}"),
                    n - k,
                ),
                _ => ("Now double that.".to_string(), format!("2 * {n}"), 2 * n),
            };
            Problem {
                question,
                steps: vec![
                    format!("The previous result is {n}."),
                    format!("{op} = {result}."),
                ],
                intuition: "Start from the last answer.".into(),
                answer: result.to_string(),
                state: State::Number(result),
            }
        }
        State::Quantity(thousandths, unit) => {
            let value = decimal(*thousandths, 1000);
            let doubled = decimal(2 * thousandths, 1000);
            Problem {
                question: "What is twice that amount?".into(),
                steps: vec![
                    format!("The amount was {value} {unit}."),
                    format!("2 * {value} = {doubled}."),
                ],
                intuition: "Same unit, the number doubles.".into(),
                answer: format!("{doubled} {unit}"),
                state: State::Quantity(2 * thousandths, unit),
            }
        }
        State::Pair { larger, smaller } => Problem {
            question: "And which is smaller?".into(),
            steps: vec![
                format!("{larger} was the larger one."),
                format!("So {smaller} is smaller."),
            ],
            intuition: "Of two, the one that is not larger.".into(),
            answer: smaller.clone(),
            state: State::Pair {
                larger: smaller.clone(),
                smaller: larger.clone(),
            },
        },
        State::Weekday(day) => {
            let n = rng.random_range(2..15usize);
            let end = (day + n) % 7;
            Problem {
                question: format!("And what day is {n} days after that?"),
                steps: vec![
                    format!("{n} = {} * 7 + {}.", n / 7, n % 7),
                    format!("{} + {} days = {}.", WEEKDAYS[*day], n % 7, WEEKDAYS[end]),
                ],
                intuition: "Count only the days past whole weeks.".into(),
                answer: WEEKDAYS[end].into(),
                state: State::Weekday(end),
            }
        }
        State::Days(days) => Problem {
            question: "How many whole weeks and extra days is that?".into(),
            steps: vec![format!("{days} = {} * 7 + {}.", days / 7, days % 7)],
            intuition: "Divide by 7.".into(),
            answer: format!("{} weeks and {} days", days / 7, days % 7),
            state: State::Number(days / 7),
        },
        State::Reversed(text) => {
            let upper = text.to_uppercase();
            Problem {
                question: "Now write that in capital letters.".into(),
                steps: vec![
                    format!("The previous answer is {text}."),
                    format!("In capitals: {upper}."),
                ],
                intuition: "Same letters, upper case.".into(),
                answer: upper.clone(),
                state: State::Word(upper),
            }
        }
        State::Word(word) => {
            let len = word.chars().count();
            Problem {
                question: "And how many letters does the word have in total?".into(),
                steps: vec![
                    format!("Letters: {}.", letters(word)),
                    format!("That is {len} letters."),
                ],
                intuition: "A short word, around six letters.".into(),
                answer: len.to_string(),
                state: State::Number(len as i64),
            }
        }
    }
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
