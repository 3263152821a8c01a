//! Verifiable tasks and the seeded arithmetic generator behind `dlogp tasks arith`.
//!
//! A [`Task`] is one problem with a reference answer; datasets on disk are JSONL
//! rows `{"id", "question", "answer"}` (see [`crate::eval::dataset`]).
//!
//! [`arith`] builds a graded arithmetic set so that even a 135M model has a task
//! with non-zero, non-saturated accuracy:
//!
//! | level | problems                                                        |
//! |-------|-----------------------------------------------------------------|
//! | 1     | single-digit sums and differences (`What is 3 + 5?`)            |
//! | 2     | two-digit sums and differences (`What is 47 - 18?`)             |
//! | 3     | single-digit products and two-step sums (`What is 4 + 3 - 2?`)  |
//! | 4     | two-digit products and divisions with integer results           |
//! | 5     | two-step word problems with names and objects                   |
//!
//! Every answer is a non-negative integer written in decimal. Levels 1–4 ask
//! `What is <expr>?` where `<expr>` uses `+`, `-`, `*` or `/` separated by
//! spaces and evaluates left to right (no expression mixes `*`/`/` with `+`/`-`).

use crate::gguf::rng::splitmix64;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// One verifiable problem: a question and its reference answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Stable identifier, unique within a dataset.
    pub id: String,
    /// The problem as shown to the model.
    pub question: String,
    /// The reference answer, compared by the verifier.
    pub answer: String,
}

/// The difficulty levels [`arith`] knows; the CLI should validate `--level` against it.
pub const LEVELS: RangeInclusive<u8> = 1..=5;

/// Generates `n` arithmetic tasks from `seed`.
///
/// With `level: Some(l)` every task has level `l`; with `None` levels 1–5 take
/// turns (task `i` has level `i % 5 + 1`), so the mix is even. A level outside
/// [`LEVELS`] is clamped into it. Ids read `arith-L{level}-{index:04}`, with the
/// index counting from 0 over the whole set, so they are unique.
///
/// The output depends only on `(n, seed, level)`, and the first `m` tasks of a
/// set of size `n ≥ m` are the set of size `m`.
pub fn arith(n: usize, seed: u64, level: Option<u8>) -> Vec<Task> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|index| {
            let level = match level {
                Some(l) => l.clamp(*LEVELS.start(), *LEVELS.end()),
                // `index % 5` is below 5, so the cast is lossless.
                None => (index % 5) as u8 + 1,
            };
            let (question, answer) = match level {
                1 => level1(&mut rng),
                2 => level2(&mut rng),
                3 => level3(&mut rng),
                4 => level4(&mut rng),
                _ => level5(&mut rng),
            };
            Task {
                id: format!("arith-L{level}-{index:04}"),
                question,
                answer: answer.to_string(),
            }
        })
        .collect()
}

fn what_is(expr: &str) -> String {
    format!("What is {expr}?")
}

/// Single-digit `a + b` or `a - b` with `a ≥ b`.
fn level1(rng: &mut SplitMix64) -> (String, u64) {
    if rng.coin() {
        let (a, b) = (rng.range(1, 9), rng.range(1, 9));
        (what_is(&format!("{a} + {b}")), a + b)
    } else {
        let a = rng.range(1, 9);
        let b = rng.range(0, a);
        (what_is(&format!("{a} - {b}")), a - b)
    }
}

/// Two-digit `a + b` or `a - b` with `a ≥ b`.
fn level2(rng: &mut SplitMix64) -> (String, u64) {
    if rng.coin() {
        let (a, b) = (rng.range(10, 99), rng.range(10, 99));
        (what_is(&format!("{a} + {b}")), a + b)
    } else {
        let a = rng.range(11, 99);
        let b = rng.range(10, a);
        (what_is(&format!("{a} - {b}")), a - b)
    }
}

/// Single-digit `a * b`, or `a ± b ± c` over single digits that never goes negative.
fn level3(rng: &mut SplitMix64) -> (String, u64) {
    if rng.coin() {
        let (a, b) = (rng.range(2, 9), rng.range(2, 9));
        return (what_is(&format!("{a} * {b}")), a * b);
    }
    let a = rng.range(1, 9);
    let (op1, b, s) = if rng.coin() {
        let b = rng.range(1, 9);
        ('+', b, a + b)
    } else {
        let b = rng.range(0, a);
        ('-', b, a - b)
    };
    // Subtract only when something is left to subtract, so the result stays ≥ 0.
    let (op2, c, total) = if s > 0 && rng.coin() {
        let c = rng.range(1, s.min(9));
        ('-', c, s - c)
    } else {
        let c = rng.range(1, 9);
        ('+', c, s + c)
    };
    (what_is(&format!("{a} {op1} {b} {op2} {c}")), total)
}

/// Two-digit by one-digit `a * b`, or a two-digit `a / b` with an integer quotient.
fn level4(rng: &mut SplitMix64) -> (String, u64) {
    if rng.coin() {
        let (a, b) = (rng.range(10, 99), rng.range(2, 9));
        (what_is(&format!("{a} * {b}")), a * b)
    } else {
        let b = rng.range(2, 9);
        // Quotients that keep the dividend two-digit: 10 ≤ b·q ≤ 99.
        let q = rng.range(10_u64.div_ceil(b), 99 / b);
        (what_is(&format!("{} / {b}", b * q)), q)
    }
}

const PEOPLE: [(&str, &str); 8] = [
    ("Tom", "he"),
    ("Anna", "she"),
    ("Sam", "he"),
    ("Lily", "she"),
    ("Ben", "he"),
    ("Mia", "she"),
    ("Omar", "he"),
    ("Rosa", "she"),
];

const OBJECTS: [&str; 8] = [
    "apples", "pencils", "marbles", "stickers", "cookies", "books", "coins", "cards",
];

/// A two-step word problem; every intermediate count is ≥ 0.
fn level5(rng: &mut SplitMix64) -> (String, u64) {
    let (name, pronoun) = PEOPLE[rng.index(PEOPLE.len())];
    let object = OBJECTS[rng.index(OBJECTS.len())];
    let ask = format!("How many {object} does {pronoun} have now?");
    match rng.below(4) {
        0 => {
            let (a, b) = (rng.range(2, 20), rng.range(1, 10));
            let c = rng.range(1, (a + b).min(10));
            let q =
                format!("{name} has {a} {object} and buys {b} more, then gives away {c}. {ask}");
            (q, a + b - c)
        }
        1 => {
            let a = rng.range(2, 20);
            let b = rng.range(1, a.min(10));
            let c = rng.range(1, 10);
            let q = format!("{name} has {a} {object} and loses {b}, then finds {c} more. {ask}");
            (q, a - b + c)
        }
        2 => {
            let (a, b) = (rng.range(2, 6), rng.range(2, 6));
            let c = rng.range(1, (a * b).min(10));
            let q = format!(
                "{name} has {a} boxes with {b} {object} in each box, then gives away {c} {object}. {ask}"
            );
            (q, a * b - c)
        }
        _ => {
            let (a, b, c) = (rng.range(2, 20), rng.range(1, 10), rng.range(1, 10));
            let q = format!(
                "{name} has {a} {object}, gets {b} more from a friend, then buys {c} more. {ask}"
            );
            (q, a + b + c)
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014) as a stream, with bounded draws.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in `0..bound` by multiply-high (bias below 2⁻⁵⁰ for small bounds);
    /// 0 when `bound` is 0.
    fn below(&mut self, bound: u64) -> u64 {
        // The high half of a u64·u64 product is below `bound`, so it fits a u64.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`; `lo` when `hi < lo`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// Uniform index into a non-empty slice of length `len`.
    fn index(&mut self, len: usize) -> usize {
        // Result is below `len`, so converting back is lossless.
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Independent evaluator for `What is <expr>?`: tokens split on spaces,
    /// applied left to right; returns `None` for anything malformed, a negative
    /// intermediate or an inexact division.
    fn eval_question(q: &str) -> Option<u64> {
        let expr = q.strip_prefix("What is ")?.strip_suffix('?')?;
        let mut tokens = expr.split(' ');
        let mut acc: i64 = tokens.next()?.parse().ok()?;
        while let Some(op) = tokens.next() {
            let x: i64 = tokens.next()?.parse().ok()?;
            acc = match op {
                "+" => acc + x,
                "-" => acc - x,
                "*" => acc * x,
                "/" if x != 0 && acc % x == 0 => acc / x,
                _ => return None,
            };
            if acc < 0 {
                return None;
            }
        }
        u64::try_from(acc).ok()
    }

    fn numbers(expr: &str) -> Vec<u64> {
        expr.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    }

    fn ops(q: &str) -> Vec<&str> {
        q.split(' ')
            .filter(|t| ["+", "-", "*", "/"].contains(t))
            .collect()
    }

    /// Independent evaluator for the word problems, driven by their verbs.
    fn eval_word_problem(q: &str) -> Option<u64> {
        let n = numbers(q);
        if q.contains("boxes with") {
            return (n[0] * n[1]).checked_sub(n[2]);
        }
        let step = |clause: &str, a: u64, b: u64| {
            if clause.contains("gives away") || clause.contains("loses") {
                a.checked_sub(b)
            } else {
                Some(a + b)
            }
        };
        let mut clauses = q.split(", then");
        let s = step(clauses.next()?, n[0], n[1])?;
        step(clauses.next()?, s, n[2])
    }

    #[test]
    fn empty_when_n_is_zero() {
        assert!(arith(0, 7, None).is_empty());
        assert!(arith(0, 7, Some(3)).is_empty());
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        for level in [None, Some(1), Some(5)] {
            assert_eq!(arith(200, 42, level), arith(200, 42, level));
            assert_ne!(arith(200, 42, level), arith(200, 43, level));
        }
        // A prefix of a larger set is the smaller set.
        assert_eq!(arith(200, 9, None)[..50], arith(50, 9, None)[..]);
    }

    #[test]
    fn answers_match_an_independent_evaluator() {
        for seed in 0..20 {
            for task in arith(500, seed, None) {
                let answer: u64 = task.answer.parse().expect("integer answer");
                let recomputed = if task.id.starts_with("arith-L5") {
                    eval_word_problem(&task.question)
                } else {
                    eval_question(&task.question)
                };
                assert_eq!(recomputed, Some(answer), "{task:?}");
            }
        }
    }

    #[test]
    fn levels_are_respected() {
        for seed in 0..5 {
            for task in arith(300, seed, Some(1)) {
                assert!(task.id.starts_with("arith-L1-"));
                let ops = ops(&task.question);
                assert!(ops == ["+"] || ops == ["-"], "{task:?}");
                assert!(numbers(&task.question).iter().all(|&x| x <= 9), "{task:?}");
            }
            for task in arith(300, seed, Some(2)) {
                let ops = ops(&task.question);
                assert!(ops == ["+"] || ops == ["-"], "{task:?}");
                let n = numbers(&task.question);
                assert!(n.iter().all(|&x| (10..=99).contains(&x)), "{task:?}");
            }
            for task in arith(300, seed, Some(3)) {
                let ops = ops(&task.question);
                let two_step = ops.len() == 2 && ops.iter().all(|o| *o == "+" || *o == "-");
                assert!(ops == ["*"] || two_step, "{task:?}");
                assert!(numbers(&task.question).iter().all(|&x| x <= 9), "{task:?}");
            }
            for task in arith(300, seed, Some(4)) {
                let ops = ops(&task.question);
                assert!(ops == ["*"] || ops == ["/"], "{task:?}");
                let n = numbers(&task.question);
                assert!(
                    (10..=99).contains(&n[0]) && (2..=9).contains(&n[1]),
                    "{task:?}"
                );
            }
            for task in arith(300, seed, Some(5)) {
                assert!(task.question.starts_with(|c: char| c.is_ascii_uppercase()));
                assert!(task.question.ends_with("have now?"), "{task:?}");
                assert!(ops(&task.question).is_empty(), "{task:?}");
            }
        }
    }

    #[test]
    fn mixed_sets_cycle_through_all_levels() {
        let tasks = arith(10, 3, None);
        let levels: Vec<&str> = tasks.iter().map(|t| &t.id[7..8]).collect();
        assert_eq!(levels, ["1", "2", "3", "4", "5", "1", "2", "3", "4", "5"]);
        assert_eq!(tasks[7].id, "arith-L3-0007");
    }

    #[test]
    fn out_of_range_levels_are_clamped() {
        assert!(arith(5, 1, Some(0))
            .iter()
            .all(|t| t.id.starts_with("arith-L1-")));
        assert!(arith(5, 1, Some(200))
            .iter()
            .all(|t| t.id.starts_with("arith-L5-")));
    }

    #[test]
    fn ids_are_unique() {
        let tasks = arith(5000, 11, None);
        let ids: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids.len(), tasks.len());
    }

    #[test]
    fn level_one_covers_its_space() {
        // Easy problems should vary: most of the 81 sums and 54 differences appear.
        let qs: HashSet<String> = arith(2000, 5, Some(1))
            .into_iter()
            .map(|t| t.question)
            .collect();
        assert!(qs.len() > 120, "only {} distinct questions", qs.len());
    }

    #[test]
    fn rows_serialize_with_the_expected_fields() {
        let task = &arith(1, 0, Some(1))[0];
        let v: serde_json::Value = serde_json::to_value(task).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["answer", "id", "question"]);
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!(&back, task);
    }
}
