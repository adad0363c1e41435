//! Seeded random streams. Every random draw in fedkit comes from a stream derived from
//! (run seed, round, client, purpose), so results never depend on thread count or scheduling.
//!
//! The generator is xoshiro256++ seeded through SplitMix64; distributions are implemented here
//! (not taken from a crate) so that the numbers can never change under a dependency upgrade.

/// A deterministic random stream. Cheap to create; derive a fresh one for each purpose.
#[derive(Clone, Debug)]
pub struct RngStream {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a, stable across platforms and Rust versions.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl RngStream {
    /// The root stream of a run.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [splitmix(&mut x), splitmix(&mut x), splitmix(&mut x), splitmix(&mut x)];
        RngStream { s, spare_normal: None }
    }

    /// The stream for (seed, purpose, a, b): e.g. `RngStream::derive(seed, "batches", round, client)`.
    pub fn derive(seed: u64, purpose: &str, a: u64, b: u64) -> Self {
        let mut x = seed ^ hash_str(purpose).rotate_left(17);
        let k1 = splitmix(&mut x);
        let mut y = k1 ^ a.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let k2 = splitmix(&mut y);
        let mut z = k2 ^ b.wrapping_mul(0xA076_1D64_78BD_642F);
        RngStream::new(splitmix(&mut z))
    }

    /// A child stream of this one for a sub-purpose (consumes one draw).
    pub fn fork(&mut self, purpose: &str) -> Self {
        let k = self.next_u64();
        RngStream::derive(k, purpose, 0, 0)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's nearly divisionless method, unbiased.
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let t = n.wrapping_neg() % n;
            while (m as u64) < t {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Standard normal N(0, 1) (polar Box-Muller).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare_normal = Some(v * f);
                return u * f;
            }
        }
    }

    /// N(mean, std^2).
    pub fn gaussian(&mut self, mean: f64, std: f64) -> f64 {
        mean + std * self.normal()
    }

    /// exp(N(mu, sigma^2)).
    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        self.gaussian(mu, sigma).exp()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang (with the boost for shape < 1).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// A draw from the symmetric Dirichlet(alpha, ..., alpha) over `k` categories.
    pub fn dirichlet(&mut self, alpha: f64, k: usize) -> Vec<f64> {
        let mut g: Vec<f64> = (0..k).map(|_| self.gamma(alpha)).collect();
        let s: f64 = g.iter().sum();
        if s > 0.0 {
            g.iter_mut().for_each(|x| *x /= s);
        } else {
            // All gammas underflowed (tiny alpha): put the mass on one category.
            let j = self.below(k as u64) as usize;
            g.iter_mut().enumerate().for_each(|(i, x)| *x = if i == j { 1.0 } else { 0.0 });
        }
        g
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }

    /// `k` distinct indices from 0..n, uniformly, in the order drawn.
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        if k * 4 > n {
            let mut all: Vec<usize> = (0..n).collect();
            // Partial Fisher-Yates: the first k entries are a uniform k-subset in random order.
            for i in 0..k {
                let j = i + self.below((n - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(k);
            all
        } else {
            // Sparse: rejection against a set (k << n, e.g. 1000 of 100000 clients).
            let mut seen = std::collections::HashSet::with_capacity(k * 2);
            let mut out = Vec::with_capacity(k);
            while out.len() < k {
                let j = self.below(n as u64) as usize;
                if seen.insert(j) {
                    out.push(j);
                }
            }
            out
        }
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| RngStream::derive(7, "x", 1, 2).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut b = RngStream::derive(7, "x", 1, 3);
        let mut c = RngStream::derive(7, "y", 1, 2);
        let first = RngStream::derive(7, "x", 1, 2).next_u64();
        assert_ne!(first, b.next_u64());
        assert_ne!(first, c.next_u64());
    }

    #[test]
    fn normal_moments() {
        let mut r = RngStream::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01, "{m}");
        assert!((v - 1.0).abs() < 0.02, "{v}");
    }

    #[test]
    fn gamma_and_dirichlet_means() {
        let mut r = RngStream::new(2);
        for shape in [0.3, 1.0, 4.5] {
            let n = 100_000;
            let m = (0..n).map(|_| r.gamma(shape)).sum::<f64>() / n as f64;
            assert!((m - shape).abs() < 0.03 * shape.max(1.0), "shape {shape}: mean {m}");
        }
        let d = r.dirichlet(0.5, 10);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(d.iter().all(|&x| x >= 0.0));
    }

    #[test]
    fn choose_is_a_subset_without_repeats() {
        let mut r = RngStream::new(3);
        for (n, k) in [(10, 10), (100, 7), (100_000, 1000)] {
            let c = r.choose(n, k);
            let mut s = c.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), k);
            assert!(c.iter().all(|&i| i < n));
        }
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut r = RngStream::new(4);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }
}
