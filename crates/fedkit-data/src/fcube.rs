//! `fcube`: NIID-Bench's FCUBE, a synthetic 3-D binary task built for feature-distribution skew.
//!
//! Follows the `dataset == 'generated'` branch of NIID-Bench's `partition_data` (Li et al.,
//! "Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE 2022), with
//! [`RngStream`] in place of Python's `random`:
//! - train, 4000 points: for location loc in 0..4, 1000 times: p1, p2, p3 ~ U[0, 1); if loc > 1,
//!   p2 = -p2; if loc is odd, p3 = -p3; even draws i give ([p1, p2, p3], label 0), odd draws the
//!   mirror image ([-p1, -p2, -p3], label 1). So location loc covers one pair of mirrored octants
//!   of the cube [-1, 1]^3, labels split by the plane x1 = 0, and each location is balanced.
//! - test, 1000 points: p1, p2, p3 ~ U[-1, 1) uniformly over the whole cube, label 0 if p1 > 0
//!   else 1, exactly as NIID-Bench (not generated location by location).
//!
//! Feature shape `[3]`, 2 classes, no users. Use it with the `synthetic_feature` partition (4
//! clients, one location each: NIID-Bench's "real" FCUBE split) or any other partition. There are
//! no FCUBE-specific parameters; the data depend only on the run's seed.
//!
//! ```toml
//! [data]
//! name = "fcube"
//! clients = 4
//! [data.partition]
//! use = "synthetic_feature"
//! ```

use fedkit_core::{Dataset, RngStream};

/// Training points per location.
pub const TRAIN_PER_LOCATION: usize = 1000;
/// Test points (uniform over the cube).
pub const TEST_POINTS: usize = 1000;

fn dataset(name: &str, x: Vec<f32>, y: Vec<u32>) -> Dataset {
    Dataset { name: name.into(), x, y, feature_shape: vec![3], classes: 2, users: None, targets: Vec::new() }
}

/// Generate (train, test) as NIID-Bench does.
pub fn generate(rng: &mut RngStream) -> (Dataset, Dataset) {
    let n = 4 * TRAIN_PER_LOCATION;
    let (mut x, mut y) = (Vec::with_capacity(3 * n), Vec::with_capacity(n));
    for loc in 0..4 {
        for i in 0..TRAIN_PER_LOCATION {
            let mut p = [rng.uniform(), rng.uniform(), rng.uniform()];
            if loc > 1 {
                p[1] = -p[1];
            }
            if loc % 2 == 1 {
                p[2] = -p[2];
            }
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            x.extend(p.iter().map(|&v| (s * v) as f32));
            y.push((i % 2) as u32);
        }
    }
    let train = dataset("fcube/train", x, y);
    let (mut x, mut y) = (Vec::with_capacity(3 * TEST_POINTS), Vec::with_capacity(TEST_POINTS));
    for _ in 0..TEST_POINTS {
        let p = [0; 3].map(|_| rng.uniform() * 2.0 - 1.0);
        x.extend(p.iter().map(|&v| v as f32));
        y.push(u32::from(p[0] <= 0.0));
    }
    (train, dataset("fcube/test", x, y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_labels_and_geometry() {
        let (train, test) = generate(&mut RngStream::new(1));
        train.validate().unwrap();
        test.validate().unwrap();
        assert_eq!((train.len(), test.len()), (4000, 1000));
        assert_eq!(train.label_histogram(&(0..4000).collect::<Vec<_>>()), [2000, 2000]);
        for d in [&train, &test] {
            for i in 0..d.len() {
                let f = d.features(i);
                assert!(f.iter().all(|v| v.abs() <= 1.0));
                assert_eq!(d.y[i], u32::from(f[0] <= 0.0), "{}: label must follow the plane x1 = 0", d.name);
            }
        }
        // Location loc's positive points have the signs NIID-Bench gives them.
        for loc in 0..4 {
            let f = train.features(loc * 1000 + 2);
            assert_eq!((f[1] < 0.0, f[2] < 0.0), (loc > 1, loc % 2 == 1));
        }
        // The test set spans the whole cube: both signs of x2 and x3 with either label.
        let neg = (0..1000).filter(|&i| test.features(i)[1] < 0.0 && test.features(i)[2] < 0.0).count();
        assert!((150..350).contains(&neg), "{neg}");
    }

    #[test]
    fn deterministic_per_seed() {
        let a = generate(&mut RngStream::new(5)).0;
        assert_eq!(a.x, generate(&mut RngStream::new(5)).0.x);
        assert_ne!(a.x, generate(&mut RngStream::new(6)).0.x);
    }
}
