//! Optimal assignment (the Hungarian method, Kuhn-Munkres with potentials, O(n^3)): used to match
//! a generator's categorical code to the judge's digits before measuring code accuracy.

use anyhow::{bail, Result};

/// The assignment of rows to distinct columns that minimises the total cost of a rectangular
/// `rows x cols` matrix with `rows <= cols`: `result[r]` is the column of row `r`.
pub fn min_cost_assignment(cost: &[Vec<f64>]) -> Result<Vec<usize>> {
    let n = cost.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let m = cost[0].len();
    if cost.iter().any(|r| r.len() != m) {
        bail!("assignment cost matrix rows have different lengths");
    }
    if n > m {
        bail!("assignment needs at least as many columns as rows, got {n} rows and {m} columns");
    }
    if cost.iter().flatten().any(|c| !c.is_finite()) {
        bail!("assignment costs must be finite");
    }
    // 1-based arrays: u (rows), v (columns), p[j] = row matched to column j, way = predecessor.
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            result[p[j] - 1] = j - 1;
        }
    }
    Ok(result)
}

/// The accuracy of `codes` as a classifier of `labels` after the best one-to-one matching of code
/// values to labels (both in `0..k`), with the matching (`matching[code] = label`).
pub fn matched_accuracy(codes: &[u32], labels: &[u32], k: usize) -> Result<(f64, Vec<usize>)> {
    if codes.len() != labels.len() || codes.is_empty() {
        bail!(
            "matched accuracy needs as many codes as labels (and at least one), got {} and {}",
            codes.len(),
            labels.len()
        );
    }
    let mut counts = vec![vec![0.0; k]; k];
    for (&c, &l) in codes.iter().zip(labels) {
        if c as usize >= k || l as usize >= k {
            bail!("code {c} or label {l} is outside 0..{k}");
        }
        counts[c as usize][l as usize] += 1.0;
    }
    let cost: Vec<Vec<f64>> = counts.iter().map(|r| r.iter().map(|c| -c).collect()).collect();
    let matching = min_cost_assignment(&cost)?;
    let right: f64 = matching.iter().enumerate().map(|(c, &l)| counts[c][l]).sum();
    Ok((right / codes.len() as f64, matching))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zoo_core::ZooRng;

    fn brute_force(cost: &[Vec<f64>]) -> f64 {
        fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..used.len() {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[row][j] + go(cost, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost[0].len()])
    }

    #[test]
    fn recovers_known_permutations_and_matches_brute_force() {
        let mut rng = ZooRng::new(3);
        for n in 1..=7 {
            // A permutation hidden in a cost matrix: zero on it, positive elsewhere.
            let perm = rng.permutation(n);
            let cost: Vec<Vec<f64>> = (0..n)
                .map(|i| (0..n).map(|j| if perm[i] == j { 0.0 } else { 1.0 + rng.next_f64() }).collect())
                .collect();
            assert_eq!(min_cost_assignment(&cost).unwrap(), perm);
            // Random rectangular matrices: the optimum equals exhaustive search.
            let m = n + (n % 3);
            let cost: Vec<Vec<f64>> = (0..n).map(|_| (0..m).map(|_| rng.next_f64() * 10.0 - 3.0).collect()).collect();
            let a = min_cost_assignment(&cost).unwrap();
            let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
            assert!((total - brute_force(&cost)).abs() < 1e-9, "n={n}");
            let mut cols = a.clone();
            cols.sort();
            cols.dedup();
            assert_eq!(cols.len(), n);
        }
        assert!(min_cost_assignment(&[vec![1.0, 2.0], vec![3.0]]).is_err());
        assert!(min_cost_assignment(&[vec![1.0], vec![2.0]]).is_err());
        assert!(min_cost_assignment(&[vec![f64::NAN]]).is_err());
    }

    #[test]
    fn matched_accuracy_undoes_a_relabelling() {
        let labels: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
        let perm = [3u32, 7, 0, 9, 1, 2, 8, 4, 6, 5];
        let mut codes: Vec<u32> = labels.iter().map(|&l| perm[l as usize]).collect();
        let (acc, matching) = matched_accuracy(&codes, &labels, 10).unwrap();
        assert_eq!(acc, 1.0);
        for (l, &c) in perm.iter().enumerate() {
            assert_eq!(matching[c as usize], l);
        }
        // 4s and 9s merged into one code: at most 90 % can be right.
        for (c, l) in codes.iter_mut().zip(&labels) {
            if *l == 9 {
                *c = perm[4];
            }
        }
        let (acc, _) = matched_accuracy(&codes, &labels, 10).unwrap();
        assert!((acc - 0.9).abs() < 1e-12, "{acc}");
        assert!(matched_accuracy(&[10], &[0], 10).is_err());
    }
}
