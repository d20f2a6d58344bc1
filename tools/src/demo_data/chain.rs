//! Multi-step reasoning chains, and follow-up questions on an earlier answer (multi-turn).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::problem::{capitalize, decimal, letters, pick, Problem, State, NAMES, WEEKDAYS, WORDS};
use super::Topic;

pub(super) fn chain(topic: Topic, rng: &mut ChaCha8Rng) -> Problem {
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

pub(super) fn follow_up(first: &Problem, rng: &mut ChaCha8Rng) -> Problem {
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
