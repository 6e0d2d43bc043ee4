//! A share of requests, as a fault or a mirror policy configures it: a percentage from 0
//! to 100, kept as parts per million (Envoy's finest `FractionalPercent` denominator).

/// How many of a million requests are chosen.
const MILLION: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentage {
    per_million: u32,
}

impl Percentage {
    pub const NONE: Percentage = Percentage { per_million: 0 };
    pub const ALL: Percentage = Percentage {
        per_million: MILLION,
    };

    /// From a validated percentage (0 to 100), rounded to a millionth of the requests;
    /// anything out of range is clamped.
    pub fn from_percent(percent: f64) -> Percentage {
        let per_million = (percent * 10_000.0).round();
        Percentage {
            per_million: if per_million.is_nan() {
                0
            } else {
                per_million.clamp(0.0, f64::from(MILLION)) as u32
            },
        }
    }

    pub fn per_million(self) -> u32 {
        self.per_million
    }

    /// Whether this request is among the chosen share. 0% and 100% draw no random number.
    #[inline]
    pub fn sample(self) -> bool {
        match self.per_million {
            0 => false,
            MILLION => true,
            n => self.chosen(fastrand::u32(0..MILLION), n),
        }
    }

    /// As [`Percentage::sample`] with a draw shared by several shares (drawn by the first
    /// that needs one): a request a 30 % share refuses is also refused by a later 20 %
    /// one, as Envoy's routes share one random value per request.
    #[inline]
    pub fn sample_once(self, draw: &std::cell::OnceCell<u32>) -> bool {
        match self.per_million {
            0 => false,
            MILLION => true,
            n => self.chosen(*draw.get_or_init(|| fastrand::u32(0..MILLION)), n),
        }
    }

    /// `draw` is uniform in `[0, MILLION)`: exactly `n` of the million draws are chosen.
    fn chosen(self, draw: u32, n: u32) -> bool {
        draw < n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_to_parts_per_million_and_clamps() {
        assert_eq!(Percentage::from_percent(0.0), Percentage::NONE);
        assert_eq!(Percentage::from_percent(100.0), Percentage::ALL);
        assert_eq!(Percentage::from_percent(50.0).per_million(), 500_000);
        assert_eq!(Percentage::from_percent(12.5).per_million(), 125_000);
        assert_eq!(Percentage::from_percent(0.0001).per_million(), 1);
        assert_eq!(Percentage::from_percent(0.00004).per_million(), 0);
        assert_eq!(Percentage::from_percent(33.33333).per_million(), 333_333);
        assert_eq!(Percentage::from_percent(150.0), Percentage::ALL);
        assert_eq!(Percentage::from_percent(-1.0), Percentage::NONE);
        assert_eq!(Percentage::from_percent(f64::NAN), Percentage::NONE);
    }

    #[test]
    fn exactly_the_configured_share_of_draws_is_chosen() {
        let p = Percentage::from_percent(25.0);
        let chosen = (0..MILLION)
            .filter(|d| p.chosen(*d, p.per_million()))
            .count();
        assert_eq!(chosen, 250_000);
    }

    #[test]
    fn none_and_all_are_certain() {
        assert!((0..10_000).all(|_| !Percentage::NONE.sample()));
        assert!((0..10_000).all(|_| Percentage::ALL.sample()));
    }

    #[test]
    fn sampling_follows_the_percentage() {
        for percent in [1.0, 10.0, 50.0, 90.0] {
            let p = Percentage::from_percent(percent);
            let n = 200_000;
            let hits = (0..n).filter(|_| p.sample()).count();
            let share = hits as f64 * 100.0 / n as f64;
            // Binomial: 5 standard deviations of 200,000 draws is under 0.6 points.
            assert!((share - percent).abs() < 0.6, "{percent}%: got {share}%");
        }
    }
}
