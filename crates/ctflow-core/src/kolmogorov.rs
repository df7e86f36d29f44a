//! The finite-n Kolmogorov distribution, for the asymptotic branch of the two-sample KS
//! test: scipy's `ks_2samp` reports `kstwo.sf(d, round(en))` there, the survival function
//! of the one-sample statistic `D_n`, so ctflow computes the same function the same way.
//!
//! The choice of method by `n` and `n·x²` follows Simard & L'Ecuyer (2011), as scipy
//! does: Ruben–Gambino closed forms at the ends of the support, the Durbin matrix
//! (Marsaglia–Tsang–Wang) and Pomeranz's recursion for small `n·x²`, Pelz–Good's
//! expansion for large `n`, and Smirnov's one-sided exact sum (doubled) in the upper tail.
//! The one-sided sum is evaluated term by term with Loader's saddle-point binomial
//! probabilities, which keep full relative precision for `n` up to a million.

use std::f64::consts::PI;

/// 2^128 and 2^-128: the scale steps that keep matrix and recursion values in range.
const SCALE_UP: f64 = 3.402_823_669_209_385e38;
const SCALE_DOWN: f64 = 2.938_735_877_055_719e-39;
const SCALE_EXPONENT: i32 = 128;

/// Above this `n`, Smirnov's sum is replaced by its exponential approximation (scipy's
/// `smirnov` does the same, so the two keep agreeing).
const SMIRNOV_EXACT_MAX_N: u64 = 1_000_000;

fn ldexp(value: f64, exponent: i32) -> f64 {
    // Two steps so that neither power of two overflows on its own.
    let half = exponent / 2;
    value * 2f64.powi(half) * 2f64.powi(exponent - half)
}

/// `P(D_n >= x)` for the two-sided one-sample statistic (scipy's `kstwo.sf(x, n)`).
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    let sf = if t <= 1.0 {
        // Ruben–Gambino: 1/(2n) <= x <= 1/n.
        if t <= 0.5 {
            1.0
        } else {
            let cdf = if n <= 140 {
                (1..=n).fold(1.0, |p, i| p * (i as f64 / nf) * (2.0 * t - 1.0))
            } else {
                (log_factorial_over_power(nf) + nf * (2.0 * t - 1.0).ln()).exp()
            };
            1.0 - cdf
        }
    } else if t >= nf - 1.0 {
        2.0 * (1.0 - x).powf(nf)
    } else if x >= 0.5 {
        2.0 * smirnov_sf(n, x)
    } else {
        let nx_squared = t * x;
        if n <= 140 {
            if nx_squared <= 0.754_693 {
                1.0 - durbin_cdf(n, x)
            } else if nx_squared <= 4.0 {
                1.0 - pomeranz_cdf(n, x)
            } else {
                2.0 * smirnov_sf(n, x)
            }
        } else if nx_squared >= 370.0 {
            0.0
        } else if nx_squared >= 2.2 {
            2.0 * smirnov_sf(n, x)
        } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
            1.0 - durbin_cdf(n, x)
        } else {
            1.0 - pelz_good_cdf(n, x)
        }
    };
    sf.clamp(0.0, 1.0)
}

/// `ln(n! / n^n)` by Stirling's series with `n·ln n` taken out first.
fn log_factorial_over_power(n: f64) -> f64 {
    // B_{2j} / (2j (2j-1)) for j = 8, ..., 1, highest power first.
    const STIRLING: [f64; 8] = [
        -3617.0 / 122_400.0,
        1.0 / 156.0,
        -691.0 / 360_360.0,
        1.0 / 1188.0,
        -1.0 / 1680.0,
        1.0 / 1260.0,
        -1.0 / 360.0,
        1.0 / 12.0,
    ];
    let r = 1.0 / n;
    let series = STIRLING.iter().fold(0.0, |acc, c| acc * (r * r) + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + r * series
}

/// `P(D_n^+ >= x)`, the one-sided statistic (scipy's `smirnov(n, x)`): the
/// Birnbaum–Tingey sum `x Σ_j C(n,j) (1-x-j/n)^(n-j) (x+j/n)^(j-1)`, each term a binomial
/// probability divided by `x + j/n`.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    if n > SMIRNOV_EXACT_MAX_N {
        let log_p = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return log_p.exp();
    }
    let last = (nf - nf * x).floor().max(0.0) as u64;
    // Neumaier summation: the terms are all positive but there can be a million.
    let (mut sum, mut carry) = (0.0f64, 0.0f64);
    for j in 0..=last.min(n) {
        let jf = j as f64;
        let p = x + jf / nf;
        let q = (nf - jf) / nf - x;
        if q <= 0.0 {
            continue;
        }
        let term = binomial_probability(j, n, p, q) / p;
        let total = sum + term;
        carry += if sum.abs() >= term.abs() {
            (sum - total) + term
        } else {
            (term - total) + sum
        };
        sum = total;
    }
    (x * (sum + carry)).clamp(0.0, 1.0)
}

/// The Stirling-formula error `ln n! - (n + 1/2) ln n + n - ln sqrt(2π)` (Loader 2000).
fn stirling_error(n: u64) -> f64 {
    let nf = n as f64;
    if n <= 15 {
        return statrs::function::gamma::ln_gamma(nf + 1.0) - (nf + 0.5) * nf.ln() + nf
            - (2.0 * PI).sqrt().ln();
    }
    const S0: f64 = 1.0 / 12.0;
    const S1: f64 = 1.0 / 360.0;
    const S2: f64 = 1.0 / 1260.0;
    const S3: f64 = 1.0 / 1680.0;
    const S4: f64 = 1.0 / 1188.0;
    let nn = nf * nf;
    if n > 500 {
        (S0 - S1 / nn) / nf
    } else if n > 80 {
        (S0 - (S1 - S2 / nn) / nn) / nf
    } else if n > 35 {
        (S0 - (S1 - (S2 - S3 / nn) / nn) / nn) / nf
    } else {
        (S0 - (S1 - (S2 - (S3 - S4 / nn) / nn) / nn) / nn) / nf
    }
}

/// `x ln(x/m) + m - x`, the binomial deviance term, without cancellation near `x = m`.
fn deviance(x: f64, m: f64) -> f64 {
    if (x - m).abs() < 0.1 * (x + m) {
        let v = (x - m) / (x + m);
        let mut s = (x - m) * v;
        let mut ej = 2.0 * x * v;
        let v2 = v * v;
        for j in 1..1000 {
            ej *= v2;
            let next = s + ej / (2 * j + 1) as f64;
            if next == s {
                return next;
            }
            s = next;
        }
        s
    } else {
        x * (x / m).ln() + m - x
    }
}

/// `C(n, k) p^k q^(n-k)` with `q = 1 - p` given separately for precision.
fn binomial_probability(k: u64, n: u64, p: f64, q: f64) -> f64 {
    let nf = n as f64;
    if k == 0 {
        let log = if p < 0.1 {
            -deviance(nf, nf * q) - nf * p
        } else {
            nf * q.ln()
        };
        return log.exp();
    }
    if k == n {
        let log = if q < 0.1 {
            -deviance(nf, nf * p) - nf * q
        } else {
            nf * p.ln()
        };
        return log.exp();
    }
    let kf = k as f64;
    let log_core = stirling_error(n)
        - stirling_error(k)
        - stirling_error(n - k)
        - deviance(kf, nf * p)
        - deviance(nf - kf, nf * q);
    let log_factor = (2.0 * PI).ln() + kf.ln() + (-kf / nf).ln_1p();
    (log_core - 0.5 * log_factor).exp()
}

fn matrix_product(a: &[f64], b: &[f64], size: usize) -> Vec<f64> {
    let mut out = vec![0.0; size * size];
    for i in 0..size {
        for k in 0..size {
            let aik = a[i * size + k];
            if aik == 0.0 {
                continue;
            }
            let row = &b[k * size..(k + 1) * size];
            for (o, bkj) in out[i * size..(i + 1) * size].iter_mut().zip(row) {
                *o += aik * bkj;
            }
        }
    }
    out
}

/// `P(D_n <= d)` by Durbin's matrix method in Marsaglia–Tsang–Wang's form: with
/// `d = (k - h)/n`, the `k`-th diagonal entry of `(n!/n^n) H^n` for an `(2k-1)²` matrix,
/// scaled as the powers grow. Cost `O(k³ log n)`: for small `n·d`.
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    // v: the first column and (reversed) last row; w[j] = 1/j!.
    let mut v = vec![0.0; m];
    let mut w = vec![0.0; m];
    let mut factorial_inverse = 1.0;
    for j in 1..=m {
        w[j - 1] = factorial_inverse;
        factorial_inverse /= j as f64;
        v[j - 1] = (1.0 - h.powi(j as i32)) * factorial_inverse;
    }
    let tail = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tail) * factorial_inverse;
    let mut matrix = vec![0.0; m * m];
    for column in 1..m {
        for row in (column - 1)..m {
            matrix[row * m + column] = w[row + 1 - column];
        }
    }
    for row in 0..m {
        matrix[row * m] = v[row];
    }
    for column in 0..m {
        matrix[(m - 1) * m + column] = v[m - 1 - column];
    }
    let mut power: Vec<f64> = (0..m * m)
        .map(|i| if i / m == i % m { 1.0 } else { 0.0 })
        .collect();
    let (mut power_exponent, mut matrix_exponent) = (0i32, 0i32);
    let mut remaining = n;
    while remaining > 0 {
        if remaining % 2 == 1 {
            power = matrix_product(&power, &matrix, m);
            power_exponent += matrix_exponent;
        }
        matrix = matrix_product(&matrix, &matrix, m);
        matrix_exponent *= 2;
        if matrix[(k - 1) * m + (k - 1)].abs() > SCALE_UP {
            for value in &mut matrix {
                *value *= SCALE_DOWN;
            }
            matrix_exponent += SCALE_EXPONENT;
        }
        remaining /= 2;
    }
    let mut p = power[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < SCALE_DOWN {
            p *= SCALE_UP;
            power_exponent -= SCALE_EXPONENT;
        }
    }
    ldexp(p, power_exponent).clamp(0.0, 1.0)
}

/// The first and last non-zero column of row `i` of Pomeranz's table.
fn pomeranz_bounds(
    i: usize,
    n: usize,
    whole: usize,
    ceil_f: usize,
    round_f: usize,
) -> (usize, usize) {
    let (n, whole, ceil_f, round_f) = (n as i64, whole as i64, ceil_f as i64, round_f as i64);
    let (j1, j2) = if i == 0 {
        (-whole - ceil_f - 1, whole + ceil_f - 1)
    } else {
        let half = (i as i64 + 1) / 2;
        if (i + 1).is_multiple_of(2) {
            if half == n + 1 {
                (n - whole - ceil_f - 1, n + whole + ceil_f - 1)
            } else {
                (half - whole - round_f - 2, half + whole + ceil_f - 2)
            }
        } else {
            (half - whole - 2, half + whole + round_f - 1)
        }
    };
    ((j1 + 2).max(0) as usize, j2.clamp(0, n) as usize)
}

/// `P(D_n <= x)` by Pomeranz's recursion (1974): `2n + 2` rows, each a convolution of
/// the previous one with Poisson-like weights, of which only a band is non-zero.
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let n = n as usize;
    let nf = n as f64;
    let t = nf * x;
    let whole = t.floor() as usize;
    let f = t - whole as f64;
    let g = f.min(1.0 - f);
    let ceil_f = usize::from(f > 0.0);
    let round_f = usize::from(f > 0.5);
    let powers = 2 * (whole + 1);
    // (c/n)^m / m! for c = g, 2g and 1 - 2g.
    let weights = |c: f64| {
        let mut out = vec![1.0; powers];
        for m in 1..powers {
            out[m] = out[m - 1] * (c / nf) / m as f64;
        }
        out
    };
    let (g_pow, two_g_pow, rest_pow) = (weights(g), weights(2.0 * g), weights(1.0 - 2.0 * g));
    let mut previous = vec![0.0; powers];
    let mut current = vec![0.0; powers];
    current[0] = 1.0;
    let (mut previous_start, mut current_start) = (0usize, 0usize);
    let mut exponent = 0i32;
    let (mut j1, _) = pomeranz_bounds(0, n, whole, ceil_f, round_f);
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut previous, &mut current);
        std::mem::swap(&mut previous_start, &mut current_start);
        current.fill(0.0);
        let (next_j1, j2) = pomeranz_bounds(i, n, whole, ceil_f, round_f);
        j1 = next_j1;
        let weights = if i == 1 || i == 2 * n + 1 {
            &g_pow
        } else if i % 2 == 1 {
            &two_g_pow
        } else {
            &rest_pow
        };
        if j2 + 1 > k1 {
            let length = j2 + 1 - k1;
            let offset = k1 - previous_start;
            // Entries j1..=j2 of the convolution of previous[offset..offset+length] with
            // weights[..length].
            for (slot, target) in (j1 - k1..=j2 - k1).enumerate() {
                let mut acc = 0.0;
                for a in 0..=target.min(length - 1) {
                    let b = target - a;
                    if b < length {
                        acc += previous.get(offset + a).copied().unwrap_or(0.0) * weights[b];
                    }
                }
                current[slot] = acc;
            }
            let largest = current.iter().copied().fold(0.0f64, f64::max);
            if largest > 0.0 && largest < SCALE_DOWN {
                for value in &mut current {
                    *value *= SCALE_UP;
                }
                exponent -= SCALE_EXPONENT;
            }
            current_start = previous_start + j1 - k1;
        }
    }
    let mut answer = current.get(n - current_start).copied().unwrap_or(0.0);
    for m in 1..=n {
        if answer.abs() > SCALE_UP {
            answer *= SCALE_DOWN;
            exponent += SCALE_EXPONENT;
        }
        answer *= m as f64;
    }
    ldexp(answer, exponent).clamp(0.0, 1.0)
}

/// Pelz and Good's (1976) expansion `K0 + K1/√n + K2/n + K3/n^1.5` of `P(D_n <= x)`,
/// with `z = x√n`, in its theta-function form for small `z`.
fn pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let q_log = -pi2 / 8.0 / z2;
    if q_log < -708.0 {
        return 0.0;
    }
    let q = q_log.exp();
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let max_k = (16.0 * z / PI).ceil() as i64;
    let mut sums = [0.0f64; 4];
    // Horner over odd m = 2k - 1 of c(m) q^(m²).
    for k in (1..=max_k).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let q_power = q.powi((8 * k) as i32);
        let coefficients = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (s, c) in sums.iter_mut().zip(coefficients) {
            *s = *s * q_power + c;
        }
    }
    let sqrt_2pi = (2.0 * PI).sqrt();
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (s, d) in sums.iter_mut().zip(divisors) {
        *s = *s * q * sqrt_2pi / d;
    }
    // The remaining sums over all integers k.
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3_z = 3f64.sqrt() * z;
    let (mut k2_extra, mut k3_extra) = (0.0, 0.0);
    for k in (1..=max_k).rev() {
        let kf = k as f64;
        let k2 = kf * kf;
        let q_power = q.powf(k2);
        k2_extra += k2 * q_power;
        let k_pi = PI * kf;
        k3_extra += (sqrt3_z + k_pi) * (sqrt3_z - k_pi) * k2 * q_power;
    }
    sums[2] += k2_extra * pi2 * sqrt_2pi / (-36.0 * z3);
    sums[3] += k3_extra * pi2 * sqrt_2pi / (216.0 * z6);
    sums.iter()
        .enumerate()
        .map(|(i, s)| s / nf.powf(i as f64 / 2.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn the_survival_function_falls_as_x_grows(
            n in 1u64..20_000, a in 0.0f64..1.0, b in 0.0f64..1.0
        ) {
            let (low, high) = (a.min(b), a.max(b));
            let (at_low, at_high) = (kstwo_sf(n, low), kstwo_sf(n, high));
            proptest::prop_assert!((0.0..=1.0).contains(&at_low));
            // The methods hand over at fixed n·x² (as in scipy), with tiny jumps there.
            proptest::prop_assert!(at_high <= at_low + 1e-6, "n={} {}:{} {}:{}", n, low, at_low, high, at_high);
        }
    }

    #[test]
    fn the_ends_of_the_support() {
        assert_eq!(kstwo_sf(10, 0.0), 1.0);
        assert_eq!(kstwo_sf(10, 0.04), 1.0);
        assert_eq!(kstwo_sf(10, 1.0), 0.0);
        // D_1 is uniform on [1/2, 1]: P(D_1 >= x) = 2(1 - x).
        assert!((kstwo_sf(1, 0.75) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn the_methods_agree_where_their_ranges_meet() {
        // Durbin and Pomeranz are both exact; Pelz-Good is close for large n.
        for (n, x) in [(50u64, 0.1), (100, 0.12), (130, 0.09)] {
            let (a, b) = (durbin_cdf(n, x), pomeranz_cdf(n, x));
            assert!((a - b).abs() < 1e-12, "n={n} x={x}: {a} vs {b}");
        }
        let (a, b) = (durbin_cdf(20_000, 0.005), pelz_good_cdf(20_000, 0.005));
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn pomeranz_agrees_with_durbin_over_its_whole_range() {
        // Across the n and n·x² where scipy uses Pomeranz, on a grid: both
        // methods are exact, so they must agree (and neither may fail on an index).
        for n in (2..=140u64).step_by(3) {
            let nf = n as f64;
            for k in 0..=12 {
                let nx_squared = 0.76 + (4.0 - 0.76) * k as f64 / 12.0;
                let x = (nx_squared / nf).sqrt();
                if nf * x <= 1.0 || x >= 0.5 || nf * x >= nf - 1.0 {
                    continue;
                }
                let (p, d) = (pomeranz_cdf(n, x), durbin_cdf(n, x));
                assert!((p - d).abs() < 1e-10, "n={n} x={x}: {p} vs {d}");
            }
        }
    }

    #[test]
    fn smirnov_sums_like_its_definition_for_small_n() {
        // n = 3, x = 0.4: x Σ_{j=0}^{1} C(3,j) (1-x-j/3)^(3-j) (x+j/3)^(j-1).
        let x: f64 = 0.4;
        let direct = x
            * ((1.0 - x).powi(3) / x
                + 3.0 * (1.0 - x - 1.0 / 3.0).powi(2) * (x + 1.0 / 3.0).powi(0));
        assert!((smirnov_sf(3, x) - direct).abs() < 1e-15);
    }
}
