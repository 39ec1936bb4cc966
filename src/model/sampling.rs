//! Choosing the next token from logits.
//!
//! Order of operations (llama.cpp's default chain): repetition penalty,
//! frequency and presence penalties (OpenAI's: minus `frequency × count`
//! and `presence` for each token seen in the penalty window), then greedy if the temperature is 0, else temperature, top-k, top-p,
//! min-p and a draw from a seeded generator, so the same seed repeats the
//! same tokens. Candidates are ranked lazily: only the best few hundred
//! are sorted unless a draw, top-p or min-p walks past them.

use rand::{Rng, SeedableRng};

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1 means no limit.
    pub top_p: f32,
    /// 0 means no limit.
    pub min_p: f32,
    /// 1 means none; applied to the last `repeat_last_n` tokens.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// 0 means none; -2 to 2, over the last `repeat_last_n` tokens.
    pub frequency_penalty: f32,
    /// 0 means none; -2 to 2, over the last `repeat_last_n` tokens.
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks every field; the error names the field, its range and the value.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!(
                "`temperature` must be between 0 and 2, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("`top_p` must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!(
                "`min_p` must be between 0 and 1, got {}",
                self.min_p
            ));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(format!(
                "`repeat_penalty` must be a positive number, got {}",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("`{name}` must be between -2 and 2, got {v}"));
            }
        }
        Ok(())
    }
}

/// A sampler with its own random stream.
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits`, given the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut counts = std::collections::HashMap::<u32, f32>::new();
            for &t in &history[start..] {
                *counts.entry(t).or_default() += 1.0;
            }
            for (t, n) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= n * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(&logits);
        }
        let mut ranked = Ranked::new(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l / p.temperature))
                .collect(),
            p.top_k,
        );
        let n = ranked.len();
        let max = ranked.get(0).1;
        let sum = ranked.sum(|l| (l - max).exp());
        let prob = |l: f32| (l - max).exp() / sum;
        let mut keep = n;
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for i in 0..n {
                acc += prob(ranked.get(i).1);
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = prob(ranked.get(0).1) * p.min_p;
            let mut above = 0;
            while above < n && prob(ranked.get(above).1) >= floor {
                above += 1;
            }
            keep = keep.min(above.max(1));
        }
        let total: f32 = if keep == n {
            ranked.sum(prob)
        } else {
            (0..keep).map(|i| prob(ranked.get(i).1)).sum()
        };
        let mut r = self.rng.random::<f32>() * total;
        for i in 0..keep {
            let (id, l) = ranked.get(i);
            r -= prob(l);
            if r <= 0.0 {
                return id;
            }
        }
        ranked.get(keep - 1).0
    }
}

/// Candidates `(id, logit)` ranked highest first (ties by lower id), lazily:
/// a draw, top-p and min-p nearly always stop within the first few dozen,
/// so only the best [`Ranked::HEAD`] are sorted at first, and the rest,
/// which all rank below them, when a walk reaches them. Sorting all of
/// SmolLM2's 49152 every step was about 7 % of a sampled decode.
struct Ranked {
    cand: Vec<(u32, f32)>,
    /// `cand[..sorted]` is in rank order.
    sorted: usize,
}

impl Ranked {
    const HEAD: usize = 256;

    fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
    }

    /// The candidates, cut to the best `top_k` (0: all).
    fn new(mut cand: Vec<(u32, f32)>, top_k: usize) -> Self {
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, Self::by_rank);
            cand.truncate(top_k);
        }
        let head = Self::HEAD.min(cand.len());
        if head < cand.len() {
            cand.select_nth_unstable_by(head - 1, Self::by_rank);
        }
        cand[..head].sort_unstable_by(Self::by_rank);
        Self { cand, sorted: head }
    }

    fn len(&self) -> usize {
        self.cand.len()
    }

    /// `Σ f(logit)` over every candidate, in f64: the result (rounded to
    /// f32) does not depend on the order, and past the sorted head the
    /// candidates are in none.
    fn sum(&self, f: impl Fn(f32) -> f32) -> f32 {
        self.cand.iter().map(|&(_, l)| f64::from(f(l))).sum::<f64>() as f32
    }

    /// The candidate of rank `i`.
    fn get(&mut self, i: usize) -> (u32, f32) {
        if i >= self.sorted {
            self.cand[self.sorted..].sort_unstable_by(Self::by_rank);
            self.sorted = self.cand.len();
        }
        self.cand[i]
    }
}

/// Index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 50) as f32 / 7.0).collect()
    }

    #[test]
    fn seeded_runs_repeat_and_seeds_differ() {
        let params = SamplingParams {
            temperature: 1.5,
            seed: 9,
            ..Default::default()
        };
        let run = |params: SamplingParams| {
            let mut s = Sampler::new(params);
            (0..40)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(params.clone()), run(params.clone()));
        assert_ne!(
            run(params.clone()),
            run(SamplingParams { seed: 10, ..params })
        );
    }

    /// The sampler as it was, sorting every candidate (with its sums over
    /// all candidates in f64, as now): the lazy ranking must draw the same
    /// tokens from the same seeds.
    fn sample_fully_sorted(
        p: &SamplingParams,
        logits: &[f32],
        rng: &mut rand::rngs::StdRng,
    ) -> u32 {
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum = probs.iter().map(|&x| f64::from(x)).sum::<f64>() as f32;
        probs.iter_mut().for_each(|x| *x /= sum);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, &pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&x| x >= floor).count().max(1));
        }
        let total: f32 = if keep == probs.len() {
            probs.iter().map(|&x| f64::from(x)).sum::<f64>() as f32
        } else {
            probs[..keep].iter().sum()
        };
        let mut r = rng.random::<f32>() * total;
        for (i, &pr) in probs[..keep].iter().enumerate() {
            r -= pr;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }

    #[test]
    fn lazy_ranking_draws_what_sorting_everything_drew() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let mut drawn_past_the_head = 0;
        for case in 0..400 {
            // Peaked and flat distributions over vocabularies below and
            // far above the sorted head, ties included.
            let n = [7, 300, 5000][case % 3];
            let spread = [0.5f32, 4.0, 12.0][case / 3 % 3];
            let logits: Vec<f32> = (0..n)
                .map(|_| (rng.random_range(-1.0f32..1.0) * spread * 8.0).round() / 8.0)
                .collect();
            let params = SamplingParams {
                temperature: [0.3, 1.0, 2.0][case % 3],
                top_k: [0, 0, 40, 1000][case % 4],
                top_p: [1.0, 0.9, 0.999][case % 3],
                min_p: [0.0, 0.0, 0.05, 1e-6][case / 2 % 4],
                seed: case as u64,
                ..Default::default()
            };
            let mut lazy = Sampler::new(params.clone());
            let mut full = rand::rngs::StdRng::seed_from_u64(params.seed);
            for step in 0..5 {
                let id = lazy.sample(&logits, &[]);
                assert_eq!(
                    id,
                    sample_fully_sorted(&params, &logits, &mut full),
                    "case {case}, step {step}: {params:?}"
                );
                let rank = logits.iter().filter(|&&l| l > logits[id as usize]).count();
                drawn_past_the_head += usize::from(rank >= Ranked::HEAD);
            }
        }
        // The lazy path past the head ran too, not only the sorted head.
        assert!(drawn_past_the_head > 0);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 1,
            seed: 3,
            ..Default::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits(), &[]), argmax(&logits()));
        }
    }

    #[test]
    fn top_p_and_min_p_restrict_the_candidates() {
        let l = vec![10.0, 9.9, 0.0, -5.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&l, &[]) == 0));
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            min_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&l, &[]) < 2));
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_repeated_token() {
        let l = vec![2.0, 1.9, 0.0];
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            ..Default::default()
        });
        assert_eq!(s.sample(&l, &[]), 0);
        assert_eq!(s.sample(&l, &[0]), 1);
    }

    #[test]
    fn frequency_and_presence_penalties_count_occurrences() {
        let l = vec![2.0, 1.0, 0.0];
        let freq = |f: f32, history: &[u32]| {
            Sampler::new(SamplingParams {
                frequency_penalty: f,
                ..Default::default()
            })
            .sample(&l, history)
        };
        assert_eq!(freq(0.6, &[0]), 0, "2.0 - 0.6 still leads");
        assert_eq!(freq(0.6, &[0, 0]), 1, "2.0 - 1.2 falls behind 1.0");
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 1.5,
            ..Default::default()
        });
        assert_eq!(
            s.sample(&l, &[0, 0, 0]),
            1,
            "once seen, -1.5 whatever the count"
        );
        assert_eq!(freq(-2.0, &[2, 2]), 2, "negative values encourage");
        let bad = SamplingParams {
            presence_penalty: 2.5,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "`presence_penalty` must be between -2 and 2, got 2.5"
        );
    }

    #[test]
    fn invalid_params_are_named() {
        let bad = SamplingParams {
            temperature: 3.0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "`temperature` must be between 0 and 2, got 3"
        );
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("`top_p`"));
    }
}
