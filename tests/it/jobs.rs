//! `Engine::serve` with a dynamic job source: jobs with different
//! configurations arrive while others decode, one is cancelled, and every
//! job's tokens equal the same job decoded alone with `Engine::run`.

use std::collections::HashMap;

use dlogp::decode::{
    DecodeError, Engine, EngineOptions, Finish, Generation, Job, JobSource, Mode, Proposer,
    Request, TokenEvent,
};
use dlogp::runtime::{ModelPair, PromptFormat, RlSource};
use dlogp::sampler::Criterion;

use crate::common::*;

/// Hands out jobs one at a time, each only after `gap` more tokens were
/// decoded; cancels job `cancel` after its `cancel_after`th token.
struct Arrivals {
    pending: Vec<Job>,
    gap: usize,
    tokens: usize,
    since_last: usize,
    per_job: HashMap<u64, usize>,
    cancel: u64,
    cancel_after: usize,
    texts: HashMap<u64, String>,
    done: HashMap<u64, Generation>,
    logprobs: HashMap<u64, Vec<f64>>,
}

impl JobSource for Arrivals {
    fn next_job(&mut self, wait: bool) -> Option<Job> {
        if self.pending.is_empty() || (!wait && self.since_last < self.gap) {
            return None;
        }
        self.since_last = 0;
        Some(self.pending.remove(0))
    }

    fn alive(&mut self, id: u64) -> bool {
        !(id == self.cancel && self.per_job.get(&id).copied().unwrap_or(0) >= self.cancel_after)
    }

    fn token(&mut self, id: u64, event: &TokenEvent<'_>) {
        self.tokens += 1;
        self.since_last += 1;
        *self.per_job.entry(id).or_default() += 1;
        self.texts.entry(id).or_default().push_str(event.text);
        if let Some(lp) = &event.logprobs {
            assert!(lp.logprob <= 0.0);
            assert_eq!(lp.top.len(), 2);
            self.logprobs.entry(id).or_default().push(lp.logprob);
        }
    }

    fn done(&mut self, id: u64, generation: Generation) -> Result<(), DecodeError> {
        assert_eq!(generation.request as u64, id);
        self.done.insert(id, generation);
        Ok(())
    }

    fn rejected(&mut self, id: u64, error: DecodeError) {
        panic!("job {id} rejected: {error}");
    }
}

fn alone(pair: &ModelPair, job: &Job) -> Generation {
    let opts = EngineOptions {
        max_tokens: job.max_tokens,
        stop: job.stop.clone(),
        draft: 1,
        n_seq: 1,
        n_ctx: 1024,
        threads: 2,
    };
    let mut engine = Engine::for_pair(pair, job.cfg.clone(), opts).unwrap();
    let mut out = None;
    let req = Request {
        key: job.key,
        prompt: job.prompt.clone(),
    };
    engine
        .run(
            &[req],
            |_, _| {},
            |g| {
                out = Some(g);
                Ok(())
            },
        )
        .unwrap();
    out.unwrap()
}

#[test]
fn serve_jobs_with_mixed_configs_equal_each_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lora = strong_lora(dir.path());
    let pair = load_pair(
        &smollm2(),
        RlSource::Lora {
            path: lora,
            scale: 1.0,
        },
    );
    let format = PromptFormat::for_model(pair.base(), false).unwrap();
    let prompt =
        |text: &str| format.tokenize_prompt(pair.base(), &format.user_prompt(text).unwrap());
    let configs = [
        decode_config(
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Dlogp,
            -0.3,
            0.1,
            0,
        ),
        decode_config(
            Mode::Replace,
            Proposer::Base,
            Criterion::Dlogp,
            -0.5,
            0.0,
            1,
        ),
        decode_config(Mode::Base, Proposer::Base, Criterion::Dlogp, -0.3, 0.1, 2),
        decode_config(
            Mode::Extrapolate,
            Proposer::Rl,
            Criterion::Random,
            0.2,
            0.5,
            3,
        ),
        decode_config(Mode::Rl, Proposer::Base, Criterion::Dlogp, -0.3, 0.1, 4),
        decode_config(Mode::Global, Proposer::Base, Criterion::Dlogp, -0.3, 0.3, 5),
        decode_config(
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Entropy,
            1.5,
            0.2,
            6,
        ),
    ];
    let texts = [
        "What is 7 + 5?",
        "Name a color of the sky.",
        "Say hello.",
        "Count to five.",
    ];
    let jobs: Vec<Job> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| Job {
            id: 100 + i as u64,
            key: (i % 2) as u64,
            prompt: prompt(texts[i % texts.len()]),
            cfg: c.clone(),
            max_tokens: 16 + 4 * i,
            stop: if i == 1 {
                vec![".".to_string()]
            } else {
                vec![]
            },
            logprobs: (i % 2 == 0).then_some(2),
        })
        .collect();
    let mut source = Arrivals {
        pending: jobs.clone(),
        gap: 5,
        tokens: 0,
        since_last: 0,
        per_job: HashMap::new(),
        cancel: 103,
        cancel_after: 3,
        texts: HashMap::new(),
        done: HashMap::new(),
        logprobs: HashMap::new(),
    };
    let opts = EngineOptions {
        max_tokens: 64,
        stop: vec![],
        draft: 4,
        n_seq: 3,
        n_ctx: 1024,
        threads: 2,
    };
    let engine_cfg = decode_config(
        Mode::Extrapolate,
        Proposer::Base,
        Criterion::Dlogp,
        -0.3,
        0.1,
        0,
    );
    let mut engine = Engine::for_pair(&pair, engine_cfg, opts).unwrap();
    engine.serve(&mut source).unwrap();
    assert_eq!(source.done.len(), jobs.len());
    let mut fired = 0;
    for job in &jobs {
        let got = &source.done[&job.id];
        let want = alone(&pair, job);
        if job.id == 103 {
            assert_eq!(got.finish, Finish::Cancelled);
            assert!(got.trace.len() >= 3, "cancelled only after 3 positions");
            assert_eq!(got.tokens[..], want.tokens[..got.tokens.len()]);
            continue;
        }
        assert_eq!(
            got.tokens,
            want.tokens,
            "job {} ({:?})",
            job.id,
            job.cfg.mode()
        );
        // alone, a one-model mode evaluates one model only: no Δlog p there
        for (g, w) in got.trace.iter().zip(&want.trace) {
            assert_eq!(
                (g.position, g.proposed, g.chosen, g.gate),
                (w.position, w.proposed, w.chosen, w.gate),
                "job {}",
                job.id
            );
            if w.dlogp.is_some() {
                assert_eq!(g.dlogp, w.dlogp, "job {}", job.id);
            }
        }
        assert_eq!(got.trace.len(), want.trace.len());
        assert_eq!(got.text, want.text);
        assert_eq!(got.finish, want.finish);
        assert_eq!(
            source.texts[&job.id], want.text,
            "streamed text of job {}",
            job.id
        );
        if job.logprobs.is_some() {
            assert_eq!(source.logprobs[&job.id].len(), got.trace.len());
        }
        fired += got.trace.iter().filter(|t| t.gate).count();
    }
    assert!(fired > 0, "the gate never fired: a weak test");
}
