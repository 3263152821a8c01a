use super::*;

fn r(n: i128, d: i128) -> Value {
    Value::Number(Rational::new(n, d).expect("valid rational"))
}

#[test]
fn boxed_extraction_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("so \\boxed{\\frac{1}{2}}.", Some("\\frac{1}{2}")),
        ("\\boxed{1} then \\boxed{2} finally \\boxed{3}", Some("3")),
        ("\\fbox{7} but \\boxed{8}", Some("8")),
        ("\\boxed{8} but \\fbox{7}", Some("7")),
        ("\\boxed{{a}{b}}", Some("{a}{b}")),
        ("\\boxed{\\{1, 2\\}}", Some("\\{1, 2\\}")),
        ("\\boxed { 42 }", Some("42")),
        ("\\boxed{1} \\boxed{\\frac{1}{2}", None),
        ("\\boxed{", None),
        ("no box here", None),
        ("\\boxed{}", None),
        ("\\boxed{  }", None),
        // `\boxed 5`: the MATH grader's short form, up to whitespace or `$`.
        ("$\\boxed 5$", Some("5")),
        ("\\boxed 5 apples", Some("5")),
        ("\\boxed5", None),
        ("\\boxedfoo{3}", None),
        ("é \\boxed{ü}", Some("ü")),
    ];
    for (text, want) in cases {
        assert_eq!(extract_boxed(text).as_deref(), *want, "input {text:?}");
    }
}

#[test]
fn gsm8k_extraction_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("She pays 5*2=10.\n#### 1,234", Some("1,234")),
        ("#### 3\nmore\n#### 4  \ntrailing", Some("4")),
        ("####\n 72", Some("72")),
        ("####   ", None),
        ("no marker 5", None),
    ];
    for (text, want) in cases {
        assert_eq!(extract_gsm8k(text).as_deref(), *want, "input {text:?}");
    }
    assert!(is_equivalent(
        &extract_gsm8k("x\n#### 1,234").unwrap(),
        "1234"
    ));
}

#[test]
fn last_number_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("I have 3 apples and 12 pears.", Some("12")),
        ("total 1,234,567 dollars", Some("1,234,567")),
        ("it is -3.5", Some("-3.5")),
        ("it is −4", Some("-4")),
        ("3-2", Some("2")),
        ("a (2) -7", Some("-7")),
        ("x2 - 1", Some("1")),
        ("half is 3/4.", Some("3/4")),
        ("value .5", Some(".5")),
        ("list 1,2,3", Some("3")),
        ("1,2345", Some("2345")),
        ("no digits", None),
        ("", None),
        ("−", None),
    ];
    for (text, want) in cases {
        assert_eq!(
            extract_last_number(text).as_deref(),
            *want,
            "input {text:?}"
        );
    }
}

#[test]
fn extract_uses_first_method_that_yields() {
    use Extraction::*;
    let text = "so 7 is wrong\n#### 9";
    assert_eq!(extract(text, &[Boxed, Gsm8k]).as_deref(), Some("9"));
    assert_eq!(extract(text, &[Boxed]), None);
    assert_eq!(
        extract("answer 7", &[Boxed, Gsm8k, LastNumber]).as_deref(),
        Some("7")
    );
    assert_eq!(
        extract("\\boxed{2} 7", &[Boxed, LastNumber]).as_deref(),
        Some("2")
    );
    assert_eq!(
        extract("\\boxed{2} 7", &[LastNumber, Boxed]).as_deref(),
        Some("7")
    );
    assert_eq!(extract("anything 5", &[]), None);
}

#[test]
fn extraction_serde_is_kebab_case() {
    let json =
        serde_json::to_string(&[Extraction::Boxed, Extraction::Gsm8k, Extraction::LastNumber])
            .unwrap();
    assert_eq!(json, r#"["boxed","gsm8k","last-number"]"#);
    let back: Vec<Extraction> = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back,
        vec![Extraction::Boxed, Extraction::Gsm8k, Extraction::LastNumber]
    );
}

#[test]
fn normalize_table() {
    let cases: &[(&str, Option<Value>)] = &[
        ("42", Some(r(42, 1))),
        ("0.50", Some(r(1, 2))),
        (".5", Some(r(1, 2))),
        ("-3", Some(r(-3, 1))),
        ("−3", Some(r(-3, 1))),
        ("\\frac{6}{-4}", Some(r(-3, 2))),
        ("-\\frac{1}{2}", Some(r(-1, 2))),
        ("\\frac{-1}{2}", Some(r(-1, 2))),
        ("\\frac{0.5}{2}", Some(r(1, 4))),
        ("\\frac1{3}", Some(r(1, 3))),
        ("$-5", Some(r(-5, 1))),
        ("-$5", Some(r(-5, 1))),
        ("+7", Some(r(7, 1))),
        ("1{,}000", Some(r(1000, 1))),
        ("1\\,000", Some(r(1000, 1))),
        ("30^\\circ", Some(r(30, 1))),
        ("30°", Some(r(30, 1))),
        ("5 cm^2", Some(r(5, 1))),
        ("5\\text{ m}^{2}", Some(r(5, 1))),
        ("60 km/h", Some(r(60, 1))),
        ("x = 5", Some(r(5, 1))),
        ("\\[ 9 \\]", Some(r(9, 1))),
        ("{{3}}", Some(r(3, 1))),
        ("1/0", Some(Value::Text("1/0".into()))),
        ("5x", Some(Value::Text("5x".into()))),
        ("2\\sqrt{3}", Some(Value::Text("2\\sqrt{3}".into()))),
        ("2 \\pi", Some(Value::Text("2\\pi".into()))),
        ("1,2", Some(Value::Text("1,2".into()))),
        ("(1, 2)", Some(Value::Text("(1,2)".into()))),
        (
            "\\text{No Solution}",
            Some(Value::Text("no solution".into())),
        ),
        (
            "12 dollars and 5 cents",
            Some(Value::Text("12 dollars and 5 cents".into())),
        ),
        ("", None),
        ("  $ $ ", None),
        ("\\text{}", None),
        (".", None),
    ];
    for (input, want) in cases {
        assert_eq!(normalize(input), *want, "input {input:?}");
    }
}

#[test]
fn equivalence_table() {
    let equal: &[(&str, &str)] = &[
        ("\\boxed{\\frac{1}{2}}", "\\boxed{\\frac{1}{2}}"),
        ("0.50", "1/2"),
        ("1/2", "\\frac{1}{2}"),
        ("\\frac{1}{2}", "\\dfrac12"),
        ("\\tfrac{1}{2}", "0.5"),
        ("-3", "−3"),
        ("$18.00", "18"),
        ("\\$18", "18"),
        ("$18$", "18"),
        ("007", "7"),
        ("12 dollars", "12"),
        ("\\text{12 apples}", "12"),
        ("12\\text{apples}", "12"),
        ("50\\%", "50"),
        ("50%", "50"),
        ("1,000,000", "1000000"),
        ("2/4", "1/2"),
        ("\\text{Yes}", "yes"),
        ("\\mathrm{YES}", " Yes. "),
        ("x+1", "x + 1"),
        ("18.", "18"),
        ("\\!5\\!", "5"),
        ("-0", "0"),
        ("0.125", "\\frac{1}{8}"),
    ];
    for (a, b) in equal {
        assert!(is_equivalent(a, b), "{a:?} should equal {b:?}");
        assert!(is_equivalent(b, a), "{b:?} should equal {a:?}");
    }
    let different: &[(&str, &str)] = &[
        ("3.14", "3.15"),
        ("1/2", "1/3"),
        ("50%", "0.5"),
        ("-3", "3"),
        ("12", "121"),
        ("1,000", "1.000"),
        ("yes", "no"),
        ("5", "5x"),
        ("no solution", "nosolution"),
        ("", ""),
        ("5", ""),
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("0.1", "0.10000000000000000001"),
    ];
    for (a, b) in different {
        assert!(!is_equivalent(a, b), "{a:?} should differ from {b:?}");
    }
}

#[test]
fn huge_numbers_fall_back_to_canonical_text() {
    let big = "123456789012345678901234567890123456789012345";
    let with_commas = "123,456,789,012,345,678,901,234,567,890,123,456,789,012,345";
    assert_eq!(normalize(big), Some(Value::Text(big.to_string())));
    assert!(is_equivalent(big, with_commas));
    assert!(is_equivalent(big, &format!("000{big}.000")));
    assert!(!is_equivalent(
        big,
        "123456789012345678901234567890123456789012346"
    ));
    assert!(!is_equivalent(big, "1"));
    // i128 limits and overflow in intermediate steps.
    let max = i128::MAX.to_string();
    assert_eq!(
        normalize(&max),
        Some(Value::Number(Rational::from_integer(i128::MAX)))
    );
    let min = i128::MIN.to_string();
    assert!(matches!(normalize(&min), Some(Value::Text(_))));
    assert!(is_equivalent(&format!("\\frac{{{max}}}{{{max}}}"), "1"));
    assert!(matches!(
        normalize(&format!("{max}/0.5")),
        Some(Value::Text(_))
    ));
    assert!(matches!(
        normalize(&format!("0.{}1", "0".repeat(60))),
        Some(Value::Text(_))
    ));
    assert_eq!(Rational::new(i128::MIN, -1), None);
    assert_eq!(Rational::new(i128::MIN, i128::MIN), None);
    assert_eq!(Rational::new(4, -6), Rational::new(-2, 3));
    assert_eq!(Rational::new(1, 0), None);
}

#[test]
fn no_panic_on_odd_input() {
    let inputs = [
        "\\",
        "{",
        "}",
        "\\frac",
        "\\frac{",
        "\\frac{1}",
        "\\frac{1}{",
        "\\text{",
        "$",
        "$$",
        "\\(",
        "\\boxed{\\",
        "−−−",
        "-",
        "-.",
        "1/",
        "/2",
        "é\\boxed é",
        "#",
        "####",
        "\u{0}",
        "1,",
        "1,,000",
        "\\frac{\\frac12}{3}",
        "{}{}",
        "ü.5ü",
        "\\text{\\text{5}}",
    ];
    for s in inputs {
        let _ = normalize(s);
        let _ = extract(
            s,
            &[Extraction::Boxed, Extraction::Gsm8k, Extraction::LastNumber],
        );
        assert!(!is_equivalent(s, "definitely-not-this"));
    }
    assert!(is_equivalent("\\text{\\text{5}}", "5"));
}

#[test]
fn prompt_template() {
    assert_eq!(
        prompt_for("What is 2+2?", DEFAULT_PROMPT_TEMPLATE),
        "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}."
    );
    assert_eq!(
        prompt_for("Q {question}", "A: {question} / {question}"),
        "A: Q {question} / Q {question}"
    );
    assert_eq!(prompt_for("Q", "Answer briefly."), "Q\nAnswer briefly.");
    assert!(check_template(DEFAULT_PROMPT_TEMPLATE).is_ok());
    let err = check_template("no placeholder").unwrap_err();
    assert!(
        err.to_string().contains("has no `{question}` placeholder"),
        "{err}"
    );
}

/// Fixed-seed LCG (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && matches!((digits.len() - i) % 3, 0) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn integer_forms(n: i64) -> Vec<String> {
    let abs = n.unsigned_abs();
    let sign = if n < 0 { "-" } else { "" };
    let uminus = if n < 0 { "−" } else { "" };
    vec![
        n.to_string(),
        format!("{uminus}{abs}"),
        format!("{sign}{}", with_commas(abs)),
        format!("{sign}${abs}.00"),
        format!("{sign}00{abs}"),
        format!("{n} dollars"),
        format!("\\text{{{n} apples}}"),
        format!("{n}\\%"),
        format!("${n}$"),
        format!("\\frac{{{}}}{{2}}", 2 * n),
        format!("{}/3", 3 * n),
        format!("{{{n}}}."),
    ]
}

/// Exact decimal expansion of p/q when q = 2^i * 5^j, else None.
fn decimal_of(p: i64, q: i64) -> Option<String> {
    let (mut m, mut twos, mut fives) = (q, 0u32, 0u32);
    while m % 2 == 0 {
        m /= 2;
        twos += 1;
    }
    while m % 5 == 0 {
        m /= 5;
        fives += 1;
    }
    if m != 1 {
        return None;
    }
    let places = twos.max(fives);
    let scale = 10i64.pow(places);
    let scaled = p.abs() * (scale / q);
    let sign = if p < 0 { "-" } else { "" };
    let int = scaled / scale;
    let frac = scaled % scale;
    Some(format!(
        "{sign}{int}.{frac:0width$}",
        width = places as usize
    ))
}

#[test]
fn property_integers_in_many_forms_are_equivalent() {
    let mut rng = Lcg(0x5eed_2024);
    for _ in 0..500 {
        let n = match rng.range(0, 2) {
            0 => rng.range(-20, 20),
            1 => rng.range(-99_999, 99_999),
            _ => rng.range(-9_999_999_999, 9_999_999_999),
        };
        let forms = integer_forms(n);
        for a in &forms {
            assert_eq!(normalize(a), Some(r(i128::from(n), 1)), "{a:?} for {n}");
            assert!(is_equivalent(a, a), "{a:?} not equivalent to itself");
            assert!(is_equivalent(a, &forms[0]), "{a:?} vs {n}");
        }
        let off_by_one = integer_forms(n + 1);
        for (a, b) in forms.iter().zip(&off_by_one) {
            assert!(!is_equivalent(a, b), "{a:?} should differ from {b:?}");
        }
    }
}

#[test]
fn property_fractions_in_many_forms_are_equivalent() {
    let mut rng = Lcg(42);
    let denominators = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 25, 40, 125, 1000];
    for _ in 0..500 {
        let p = rng.range(-1000, 1000);
        let q = denominators[rng.range(0, denominators.len() as i64 - 1) as usize];
        let k = rng.range(1, 50);
        let reference = r(i128::from(p), i128::from(q));
        let mut forms = vec![
            format!("{p}/{q}"),
            format!("{}/{}", p * k, q * k),
            format!("\\frac{{{p}}}{{{q}}}"),
            format!("\\dfrac{{{}}}{{{}}}", p * k, q * k),
            format!("$\\tfrac{{{p}}}{{{q}}}$"),
            format!("\\boxed{{\\frac{{{p}}}{{{q}}}}}"),
        ];
        if (0..10).contains(&p) && (1..10).contains(&q) {
            forms.push(format!("\\frac{p}{q}"));
        }
        if let Some(d) = decimal_of(p, q) {
            forms.push(d.clone());
            forms.push(format!("{d}000"));
        }
        for a in &forms {
            let text = extract_boxed(a).unwrap_or_else(|| a.clone());
            assert_eq!(
                normalize(&text),
                Some(reference.clone()),
                "{a:?} for {p}/{q}"
            );
            assert!(
                is_equivalent(&text, &text),
                "{a:?} not equivalent to itself"
            );
            assert!(is_equivalent(&text, &forms[0]), "{a:?} vs {p}/{q}");
            assert!(
                !is_equivalent(&text, &format!("{}/{q}", p + 1)),
                "{a:?} vs ({p}+1)/{q}"
            );
        }
    }
}
