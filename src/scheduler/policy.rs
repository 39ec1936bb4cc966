//! Selection policies: which eligible node gets a request.
//!
//! - `min_load`: the lowest load fraction (in flight / slots, the worker's
//!   report plus what this gateway has forwarded since), ties by id.
//! - `best_score`: the highest score, where, each term in 0..1,
//!   `score = 0.4 × (1 − load) + 0.3 × success_rate
//!          + 0.2 × 1 / (1 + latency_ms / 1000) + 0.1 × min(requests / 100, 1)`
//!   (a node with no requests yet counts a success rate of 1 and a latency
//!   score of 1, so new nodes get tried).
//! - `round_robin`: in turn over the eligible nodes sorted by id.
//! - `random`: uniformly.
//!
//! Choosing is a pure function of the candidates (and a counter or a random
//! draw), so tests script the nodes and check the pick.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    MinLoad,
    BestScore,
    RoundRobin,
    Random,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::MinLoad,
        Policy::BestScore,
        Policy::RoundRobin,
        Policy::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::MinLoad => "min_load",
            Policy::BestScore => "best_score",
            Policy::RoundRobin => "round_robin",
            Policy::Random => "random",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "`selection_policy` must be one of min_load, best_score, round_robin, random, got `{s}`"
                )
            })
    }
}

/// What a policy sees of one eligible node.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    /// 0 (idle) to 1 (every slot taken).
    pub load: f64,
    pub success_rate: f64,
    /// Moving average; 0 when unknown.
    pub latency_ms: f64,
    pub requests: u64,
}

impl Candidate {
    /// The `best_score` formula (see the module docs).
    pub fn score(&self) -> f64 {
        let latency = 1.0 / (1.0 + self.latency_ms.max(0.0) / 1000.0);
        let experience = (self.requests as f64 / 100.0).min(1.0);
        0.4 * (1.0 - self.load.clamp(0.0, 1.0))
            + 0.3 * self.success_rate.clamp(0.0, 1.0)
            + 0.2 * latency
            + 0.1 * experience
    }
}

/// The index in `candidates` of the node `policy` picks; `None` when there
/// are none. `turn` is the round-robin counter (taken and incremented by
/// the caller), `draw` a uniform random number in [0, 1).
pub fn choose(policy: Policy, candidates: &[Candidate], turn: u64, draw: f64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let by_id = |a: &usize, b: &usize| candidates[*a].id.cmp(&candidates[*b].id);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(by_id);
    Some(match policy {
        Policy::MinLoad => *order
            .iter()
            .min_by(|a, b| {
                candidates[**a]
                    .load
                    .total_cmp(&candidates[**b].load)
                    .then(by_id(a, b))
            })
            .expect("not empty"),
        Policy::BestScore => *order
            .iter()
            .max_by(|a, b| {
                candidates[**a]
                    .score()
                    .total_cmp(&candidates[**b].score())
                    .then(by_id(b, a))
            })
            .expect("not empty"),
        Policy::RoundRobin => order[(turn % order.len() as u64) as usize],
        Policy::Random => {
            order[((draw.clamp(0.0, 0.999_999) * order.len() as f64) as usize).min(order.len() - 1)]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: f64, success_rate: f64, latency_ms: f64, requests: u64) -> Candidate {
        Candidate {
            id: id.into(),
            load,
            success_rate,
            latency_ms,
            requests,
        }
    }

    #[test]
    fn min_load_picks_the_least_loaded() {
        let c = [
            node("a", 0.5, 1.0, 0.0, 0),
            node("b", 0.1, 0.0, 9e9, 0),
            node("c", 0.9, 1.0, 0.0, 0),
        ];
        assert_eq!(choose(Policy::MinLoad, &c, 0, 0.0), Some(1));
        let tie = [node("z", 0.2, 1.0, 0.0, 0), node("y", 0.2, 1.0, 0.0, 0)];
        assert_eq!(
            choose(Policy::MinLoad, &tie, 0, 0.0),
            Some(1),
            "ties go to the lower id"
        );
        assert_eq!(choose(Policy::MinLoad, &[], 0, 0.0), None);
    }

    #[test]
    fn best_score_weighs_as_documented() {
        let idle_new = node("new", 0.0, 1.0, 0.0, 0);
        assert!((idle_new.score() - 0.9).abs() < 1e-12);
        let busy_vet = node("vet", 1.0, 1.0, 0.0, 1000);
        assert!((busy_vet.score() - 0.6).abs() < 1e-12);
        let slow = node("slow", 0.0, 1.0, 1000.0, 100);
        assert!((slow.score() - (0.4 + 0.3 + 0.1 + 0.1)).abs() < 1e-12);
        let flaky = node("flaky", 0.0, 0.5, 0.0, 100);
        let c = [busy_vet, flaky.clone(), slow, idle_new];
        // 0.6, 0.85, 0.9, 0.9: the tie between slow and new goes to "new".
        assert_eq!(choose(Policy::BestScore, &c, 0, 0.0), Some(3));
        assert!((flaky.score() - 0.85).abs() < 1e-12);
    }

    #[test]
    fn round_robin_is_fair_over_a_thousand_picks() {
        let c = [
            node("c", 0.0, 1.0, 0.0, 0),
            node("a", 0.9, 1.0, 0.0, 0),
            node("b", 0.5, 1.0, 0.0, 0),
        ];
        let mut counts = [0usize; 3];
        for turn in 0..1000 {
            counts[choose(Policy::RoundRobin, &c, turn, 0.0).unwrap()] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        assert!(counts.iter().all(|&n| n == 333 || n == 334), "{counts:?}");
        let firsts: Vec<usize> = (0..3)
            .map(|t| choose(Policy::RoundRobin, &c, t, 0.0).unwrap())
            .collect();
        assert_eq!(firsts, [1, 2, 0], "in id order a, b, c");
    }

    #[test]
    fn random_spreads_and_stays_in_range() {
        let c = [node("a", 0.0, 1.0, 0.0, 0), node("b", 0.0, 1.0, 0.0, 0)];
        assert_eq!(choose(Policy::Random, &c, 0, 0.0), Some(0));
        assert_eq!(choose(Policy::Random, &c, 0, 0.75), Some(1));
        assert_eq!(choose(Policy::Random, &c, 0, 1.0), Some(1));
        assert_eq!("best_score".parse::<Policy>(), Ok(Policy::BestScore));
        assert!("fastest"
            .parse::<Policy>()
            .unwrap_err()
            .contains("`fastest`"));
    }
}
