//! Budget arithmetic: how many bytes of a device Strata may plan for.
//!
//! budget = total × cap − reserve, in integer basis points so that no total
//! (0, one byte, `u64::MAX`) and no cap (0 % to 100 %) overflows, rounds up
//! past the total, or panics. The result never exceeds `total`.

use std::fmt;
use std::str::FromStr;

/// A percentage from 0 to 100 with two decimals, stored in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const FULL: Percent = Percent(10_000);

    /// `None` outside 0..=100 or for NaN.
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && (0.0..=100.0).contains(&value))
            .then(|| Percent((value * 100.0).round() as u16))
    }

    /// Whole percent, for constants: `Percent::whole(70)`. Clamped to 100.
    pub const fn whole(value: u16) -> Self {
        Percent(if value > 100 { 10_000 } else { value * 100 })
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// `self` of `total`, rounded down: never more than `total`.
    pub fn of(self, total: u64) -> u64 {
        // u64 × 10_000 fits in u128; the quotient is at most `total`.
        (u128::from(total) * u128::from(self.0) / 10_000) as u64
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{:.2}%", self.as_f64())
        }
    }
}

/// As a number of percent (`62.5`).
impl serde::Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// Parses `60`, `60%`, `62.5 %`.
impl FromStr for Percent {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        let s = s.strip_suffix('%').unwrap_or(s).trim();
        s.parse::<f64>().ok().and_then(Percent::new).ok_or(())
    }
}

/// The bytes a device of `total` bytes allows under `cap` after keeping
/// `reserve` back: total × cap − reserve, floored at zero.
pub fn budget(total: u64, cap: Percent, reserve: u64) -> u64 {
    cap.of(total).saturating_sub(reserve)
}

/// The budgets one set of settings gives each kind of device, used when
/// `--devices` gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    pub cap: Percent,
    pub reserve: u64,
}

/// The default mode's cap and reserve.
impl Default for BudgetPolicy {
    fn default() -> Self {
        crate::resources::Mode::Default.defaults().budget_policy()
    }
}

impl BudgetPolicy {
    /// A GPU: total × cap − reserve, and never more than is free now.
    pub fn gpu(&self, total: u64, free: u64) -> u64 {
        budget(total, self.cap, self.reserve).min(free)
    }

    /// The CPU: the cap of system memory (no reserve: the OS keeps its
    /// own), and never more than is available now.
    pub fn cpu(&self, total: u64, available: u64) -> u64 {
        self.cap.of(total).min(available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_totals_and_caps() {
        for cap in [Percent::ZERO, Percent::whole(50), Percent::FULL] {
            assert_eq!(budget(0, cap, 0), 0);
            assert_eq!(budget(0, cap, u64::MAX), 0);
            assert_eq!(budget(u64::MAX, cap, u64::MAX), 0);
        }
        assert_eq!(budget(1, Percent::FULL, 0), 1);
        assert_eq!(budget(1, Percent::whole(99), 0), 0, "rounds down");
        assert_eq!(budget(1, Percent::ZERO, 0), 0);
        assert_eq!(budget(u64::MAX, Percent::FULL, 0), u64::MAX);
        assert_eq!(budget(u64::MAX, Percent::ZERO, 0), 0);
        assert_eq!(budget(u64::MAX, Percent::whole(50), 0), u64::MAX / 2);
        assert_eq!(budget(u64::MAX, Percent::FULL, 1), u64::MAX - 1);
        assert_eq!(
            budget(8 << 30, Percent::whole(70), 256 << 20),
            5_744_518_758
        );
        assert_eq!(
            budget(100, Percent::whole(50), 60),
            0,
            "reserve over the cap"
        );
    }

    #[test]
    fn never_more_than_the_total() {
        let totals = [0, 1, 2, 3, 7, 999, 1 << 40, u64::MAX - 1, u64::MAX];
        for total in totals {
            for bp in [0u16, 1, 3333, 5000, 9999, 10_000] {
                let p = Percent(bp);
                assert!(p.of(total) <= total, "{p} of {total}");
            }
        }
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!("60".parse::<Percent>(), Ok(Percent::whole(60)));
        assert_eq!(" 62.5 % ".parse::<Percent>().unwrap().basis_points(), 6250);
        assert_eq!("0%".parse::<Percent>(), Ok(Percent::ZERO));
        assert_eq!("100".parse::<Percent>(), Ok(Percent::FULL));
        for bad in ["101", "-1", "NaN", "inf", "", "half"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad}");
        }
        assert_eq!(Percent::whole(70).to_string(), "70%");
        assert_eq!(Percent(6250).to_string(), "62.50%");
    }
}
