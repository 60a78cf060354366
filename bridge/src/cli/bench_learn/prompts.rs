//! The benchmark's prompt set (bridge/data/bench-prompts.jsonl): everyday questions written for
//! the project, split into the ones the rater sees and the held-out ones the curve is read on.

use anyhow::{Context, Result, bail};
use rlclaw_trainer::lora::SplitMix64;
use serde::Deserialize;

const PROMPTS: &str = include_str!("../../../data/bench-prompts.jsonl");

#[derive(Deserialize)]
struct Line {
    split: String,
    prompt: String,
}

/// Training and held-out prompts.
pub struct PromptSet {
    pub train: Vec<String>,
    pub held_out: Vec<String>,
}

impl PromptSet {
    pub fn shipped() -> Result<PromptSet> {
        let mut set = PromptSet {
            train: Vec::new(),
            held_out: Vec::new(),
        };
        for (i, line) in PROMPTS
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let l: Line = serde_json::from_str(line)
                .with_context(|| format!("bench-prompts.jsonl line {}", i + 1))?;
            match l.split.as_str() {
                "train" => set.train.push(l.prompt),
                "held-out" => set.held_out.push(l.prompt),
                other => bail!(
                    "bench-prompts.jsonl line {}: unknown split {other:?}",
                    i + 1
                ),
            }
        }
        Ok(set)
    }
}

/// The training prompts in a seeded order, cycled for as long as the rater rates.
pub struct PromptStream {
    order: Vec<usize>,
    next: usize,
    rng: SplitMix64,
}

impl PromptStream {
    pub fn new(n: usize, seed: u64) -> PromptStream {
        let mut s = PromptStream {
            order: (0..n).collect(),
            next: n,
            rng: SplitMix64::new(seed),
        };
        s.reshuffle();
        s
    }

    fn reshuffle(&mut self) {
        for i in (1..self.order.len()).rev() {
            let j = self.rng.below(i + 1);
            self.order.swap(i, j);
        }
        self.next = 0;
    }

    /// The next prompt's index.
    pub fn next_index(&mut self) -> usize {
        if self.next >= self.order.len() {
            self.reshuffle();
        }
        self.next += 1;
        self.order[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_set_has_enough_distinct_prompts_in_each_split() {
        let s = PromptSet::shipped().unwrap();
        assert!(s.train.len() >= 64 && s.held_out.len() >= 32);
        let mut all: Vec<&String> = s.train.iter().chain(&s.held_out).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), s.train.len() + s.held_out.len());
    }

    #[test]
    fn the_stream_visits_every_prompt_once_per_pass_in_a_seeded_order() {
        let take = |seed| {
            let mut s = PromptStream::new(10, seed);
            (0..20).map(|_| s.next_index()).collect::<Vec<_>>()
        };
        let a = take(3);
        assert_eq!(a, take(3));
        assert_ne!(a, take(4));
        let mut first: Vec<usize> = a[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
    }
}
