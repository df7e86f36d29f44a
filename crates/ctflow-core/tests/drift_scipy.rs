//! ctflow's drift statistics against scipy's, on the fixtures `scripts/drift_fixtures.py`
//! wrote. The samples are regenerated here with the same integer generator, so both
//! sides see identical numbers.

// Test code states its expectations with unwrap, expect and panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use ctflow_core::drift::{
    KsMethod, bin_fractions, category_counts, chi_square, jensen_shannon, ks_2samp, quantile_edges,
    sturges_edges, wasserstein, wasserstein_normed,
};
use serde_json::Value;

const REL: f64 = 1e-9;

fn uniforms(seed: u64, count: usize) -> Vec<f64> {
    let mut x = seed & 0xFFFF_FFFF;
    (0..count)
        .map(|_| {
            x = (1_664_525 * x + 1_013_904_223) & 0xFFFF_FFFF;
            (x >> 12) as f64 / 1_048_576.0
        })
        .collect()
}

fn sample(spec: &Value) -> Vec<f64> {
    let kind = spec[0].as_str().expect("kind");
    let seed = spec[1].as_u64().expect("seed");
    let n = spec[2].as_u64().expect("n") as usize;
    let shift = spec[3].as_f64().expect("shift");
    let scale = spec[4].as_f64().expect("scale");
    let u = uniforms(seed, 4 * n);
    (0..n)
        .map(|i| match kind {
            "normalish" => {
                (u[4 * i] + u[4 * i + 1] + u[4 * i + 2] + u[4 * i + 3] - 2.0) * scale + shift
            }
            "skewed" => u[i] * u[i] * 8.0 * scale + shift,
            "ties" => (u[i] * 6.0).floor() + shift,
            other => panic!("unknown kind {other}"),
        })
        .collect()
}

fn categories(spec: &Value) -> Vec<String> {
    let seed = spec[0].as_u64().expect("seed");
    let n = spec[1].as_u64().expect("n") as usize;
    let k = spec[2].as_f64().expect("k");
    let first = spec[3].as_u64().expect("first") as u8;
    uniforms(seed, n)
        .into_iter()
        .map(|v| ((b'a' + first + (v * k) as u8) as char).to_string())
        .collect()
}

fn close(actual: f64, expected: f64, rel: f64) -> bool {
    actual == expected || (actual - expected).abs() <= rel * expected.abs().max(actual.abs())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn fixtures() -> Value {
    serde_json::from_str(include_str!("drift_fixtures.json")).expect("valid fixtures")
}

#[test]
fn kolmogorov_distribution_matches_scipy_kstwo() {
    let mut failures = Vec::new();
    for row in fixtures()["kstwo_sf"].as_array().expect("rows") {
        let n = row[0].as_u64().expect("n");
        let x = row[1].as_f64().expect("x");
        let expected = row[2].as_f64().expect("sf");
        let actual = ctflow_core::kolmogorov::kstwo_sf(n, x);
        if !close(actual, expected, REL) {
            failures.push(format!("kstwo.sf({x}, {n}): {actual} != scipy {expected}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn numeric_statistics_match_scipy() {
    let mut failures = Vec::new();
    for case in fixtures()["numeric"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let (reference, current) = (sample(&case["reference"]), sample(&case["current"]));
        let mut expect = |what: &str, actual: f64, key: &str, rel: f64| {
            let expected = case[key].as_f64().expect(key);
            if !close(actual, expected, rel) {
                failures.push(format!("{name} {what}: {actual} != scipy {expected}"));
            }
        };
        let ks = ks_2samp(&reference, &current).expect("valid samples");
        expect("KS statistic", ks.statistic, "ks_statistic", REL);
        let method = if case["ks_exact"].as_bool() == Some(true) {
            KsMethod::Exact
        } else {
            KsMethod::Asymptotic
        };
        assert_eq!(ks.method, method, "{name}");
        expect("KS p-value", ks.p_value, "ks_p_value", REL);
        expect(
            "Wasserstein",
            wasserstein(&reference, &current).expect("valid"),
            "wasserstein",
            REL,
        );
        expect(
            "normalised Wasserstein",
            wasserstein_normed(&reference, &current).expect("valid"),
            "wasserstein_normed",
            REL,
        );
        let edges = sturges_edges(&reference, &current).expect("valid");
        let expected_edges = floats(&case["sturges_edges"]);
        assert_eq!(
            edges.len(),
            expected_edges.len(),
            "{name} Sturges bin count"
        );
        for (a, e) in edges.iter().zip(&expected_edges) {
            assert!(close(*a, *e, 1e-12), "{name} edge {a} != {e}");
        }
        let (rf, cf) = (
            bin_fractions(&reference, &expected_edges),
            bin_fractions(&current, &expected_edges),
        );
        assert_eq!(rf, floats(&case["sturges_reference_fractions"]), "{name}");
        assert_eq!(cf, floats(&case["sturges_current_fractions"]), "{name}");
        expect(
            "Jensen-Shannon",
            jensen_shannon(&rf, &cf),
            "jensen_shannon_sturges",
            REL,
        );
        let deciles = quantile_edges(&reference, 10).expect("valid");
        let expected_deciles = floats(&case["reference_deciles"]);
        // The edges are the reference deciles with repeats merged and the outer two
        // opened to infinity.
        let mut merged = expected_deciles.clone();
        merged.dedup();
        let inner = &merged[1..merged.len() - 1];
        assert_eq!(deciles[1..deciles.len() - 1].len(), inner.len(), "{name}");
        for (a, e) in deciles[1..deciles.len() - 1].iter().zip(inner) {
            assert!(close(*a, *e, 1e-12), "{name} decile {a} != {e}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn categorical_statistics_match_scipy() {
    for case in fixtures()["categorical"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let (reference, current) = (categories(&case["reference"]), categories(&case["current"]));
        let r: Vec<&str> = reference.iter().map(String::as_str).collect();
        let c: Vec<&str> = current.iter().map(String::as_str).collect();
        let (keys, rc, cc) = category_counts(&r, &c);
        let expected_keys: Vec<String> = case["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect();
        assert_eq!(keys, expected_keys, "{name}");
        assert_eq!(rc, floats(&case["reference_counts"]), "{name}");
        let chi = chi_square(&rc, &cc);
        match case["chi_square_statistic"].as_f64() {
            Some(expected) => {
                assert!(
                    close(chi.statistic, expected, REL),
                    "{name}: {} != {expected}",
                    chi.statistic
                );
                let p = case["chi_square_p_value"].as_f64().expect("p");
                assert!(
                    close(chi.p_value, p, REL),
                    "{name}: p {} != {p}",
                    chi.p_value
                );
            }
            None => assert!(chi.statistic.is_infinite() && chi.p_value == 0.0, "{name}"),
        }
        let (nr, nc) = (reference.len() as f64, current.len() as f64);
        let rf: Vec<f64> = rc.iter().map(|v| v / nr).collect();
        let cf: Vec<f64> = cc.iter().map(|v| v / nc).collect();
        let js = case["jensen_shannon"].as_f64().expect("js");
        assert!(close(jensen_shannon(&rf, &cf), js, REL), "{name}");
    }
}
