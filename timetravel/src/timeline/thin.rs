//! Thinning: which checkpoint to drop when the store is over its memory
//! budget.
//!
//! The policy keeps the gap around each checkpoint proportional to its
//! distance from the nearest *focus* (the furthest point executed and the
//! machine's present position): it drops the checkpoint whose removal
//! leaves the smallest gap relative to that distance. Repeated, this makes
//! spacing grow geometrically away from the focus — dense near the present,
//! sparse far back — so a reverse step near the present stays cheap and one
//! far back costs in proportion to how far back it is.

/// Index of the checkpoint to drop among checkpoints at `icounts`
/// (ascending), never the first or the last nor one `protected` says to
/// keep. `focus`: the instruction counts history is densest around;
/// `unit`: the normal spacing. `None` when nothing can go.
pub(crate) fn victim(
    icounts: &[u64],
    focus: &[u64],
    unit: u64,
    protected: impl Fn(u64) -> bool,
) -> Option<usize> {
    let n = icounts.len();
    if n < 3 {
        return None;
    }
    (1..n - 1)
        .filter(|&j| !protected(icounts[j]))
        .map(|j| {
            let gap = icounts[j + 1] - icounts[j - 1];
            let dist = focus
                .iter()
                .map(|&f| f.abs_diff(icounts[j]))
                .min()
                .unwrap_or(0);
            (j, gap as f64 / (dist as f64 + unit.max(1) as f64))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(j, _)| j)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thins 1000 evenly spaced checkpoints down to `keep`, focus at the end.
    fn thinned(keep: usize) -> Vec<u64> {
        let mut v: Vec<u64> = (0..1000).map(|i| i * 10).collect();
        while v.len() > keep {
            let j = victim(&v, &[9990], 10, |_| false).unwrap();
            v.remove(j);
        }
        v
    }

    #[test]
    fn spacing_grows_with_distance_from_the_focus() {
        let v = thinned(40);
        assert_eq!((v[0], v[39]), (0, 9990), "ends kept");
        let gaps: Vec<u64> = v.windows(2).map(|w| w[1] - w[0]).collect();
        // Near the focus the original spacing survives; far back the gaps
        // are much wider, growing (roughly) monotonically.
        assert!(gaps[gaps.len() - 3..].iter().all(|&g| g <= 30), "{gaps:?}");
        assert!(gaps[1] > 500, "{gaps:?}");
        let far: u64 = gaps[..10].iter().sum();
        let near: u64 = gaps[gaps.len() - 10..].iter().sum();
        assert!(far > 10 * near, "{gaps:?}");
    }

    #[test]
    fn protected_and_ends_stay() {
        assert_eq!(victim(&[0, 5], &[5], 1, |_| false), None);
        assert_eq!(victim(&[0, 5, 9], &[9], 1, |ic| ic == 5), None);
        assert_eq!(victim(&[0, 5, 7, 9], &[9], 1, |ic| ic == 5), Some(2));
    }
}
