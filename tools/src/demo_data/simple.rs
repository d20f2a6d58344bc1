//! One-step problems, one generator per topic.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::problem::{ask, decimal, letters, pick, Problem, State, MONTHS, UNITS, WEEKDAYS, WORDS};
use super::Topic;

pub(super) fn simple(topic: Topic, rng: &mut ChaCha8Rng) -> Problem {
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
