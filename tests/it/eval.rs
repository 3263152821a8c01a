//! `dlogp tasks`: seeded, verifiable task sets readable by the dataset loader.

use dlogp::eval::{load, DatasetSpec, Preset};

use crate::common::*;

#[test]
fn arith_tasks_are_seeded_and_load_with_the_default_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    for (path, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        let out = dlogp(&[
            "tasks",
            "arith",
            "-n",
            "40",
            "--seed",
            seed,
            "--output",
            p(path),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (ta, tb, tc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert_eq!(ta, tb, "same seed, same tasks");
    assert_ne!(ta, tc, "another seed, other tasks");
    let tasks = load(ta.as_slice(), "a.jsonl", &DatasetSpec::from(Preset::Arith)).unwrap();
    assert_eq!(tasks.len(), 40);
    for t in &tasks {
        assert!(t.answer.parse::<i64>().is_ok(), "integer answer: {t:?}");
    }
    // level 1: single-digit sums and differences whose answers check out
    let out = dlogp(&["tasks", "arith", "-n", "20", "--level", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for t in load(text.as_bytes(), "l1", &DatasetSpec::from(Preset::Arith)).unwrap() {
        let q = t
            .question
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        let parts: Vec<&str> = q.split(' ').collect();
        let (x, op, y): (i64, &str, i64) = (
            parts[0].parse().unwrap(),
            parts[1],
            parts[2].parse().unwrap(),
        );
        assert!(x < 10 && y < 10, "{q}");
        let want = if op == "+" { x + y } else { x - y };
        assert_eq!(t.answer, want.to_string(), "{q}");
    }
    let out = dlogp(&["tasks", "arith", "--level", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--level"));
}
