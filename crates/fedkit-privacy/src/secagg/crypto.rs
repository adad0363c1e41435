//! The secure-aggregation primitives, all from maintained RustCrypto / dalek crates: X25519 key
//! agreement (x25519-dalek), HKDF-SHA256 key derivation (hkdf, sha2), the ChaCha20 stream as
//! mask generator (chacha20), ChaCha20-Poly1305 for the shares in transit (chacha20poly1305),
//! and Shamir t-of-n sharing of P-256 scalars (vsss-rs over p256's field). The shared secrets
//! are field elements; keys and mask seeds are derived from them through HKDF.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use fedkit_core::{ClientId, Error, Result};
use hkdf::Hkdf;
use p256::Scalar;
use p256::elliptic_curve::ff::{Field, PrimeField};
use sha2::Sha256;
use vsss_rs::{DefaultShare, IdentifierPrimeField, ReadableShareSet, Share, shamir};
use x25519_dalek::{PublicKey, StaticSecret};

/// A 32-byte secret seed.
pub type Seed = [u8; 32];

/// HKDF-SHA256 of `ikm` with `info`, 32 bytes.
pub fn derive(ikm: &[u8], info: &[u8]) -> Seed {
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    Hkdf::<Sha256>::new(None, ikm).expand(info, &mut out).expect("32 bytes is a valid HKDF length");
    out
}

/// An X25519 key pair derived from a seed (the seed is what gets secret-shared: a raw X25519
/// key is not a field element).
pub fn key_pair(seed: &Seed, purpose: &[u8]) -> (StaticSecret, [u8; 32]) {
    let sk = StaticSecret::from(derive(seed, purpose));
    let pk = PublicKey::from(&sk).to_bytes();
    (sk, pk)
}

/// The X25519 shared secret of `sk` and the peer's public key.
pub fn agree(sk: &StaticSecret, peer: &[u8; 32]) -> [u8; 32] {
    sk.diffie_hellman(&PublicKey::from(*peer)).to_bytes()
}

/// Add (or, with `add` false, subtract) the mask words of the ChaCha20 stream keyed by `seed`
/// to `out`, in Z_2^32 (zero nonce: every seed keys one stream only). The stream is produced
/// in 16 KiB blocks, so no mask vector is ever allocated.
pub fn apply_mask(seed: &Seed, out: &mut [u32], add: bool) {
    let mut cipher = ChaCha20::new(seed.into(), &[0u8; 12].into());
    let mut block = [0u8; 16 * 1024];
    for chunk in out.chunks_mut(block.len() / 4) {
        let bytes = &mut block[..4 * chunk.len()];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        for (o, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            *o = if add { o.wrapping_add(m) } else { o.wrapping_sub(m) };
        }
    }
}

/// `len` mask words of the stream keyed by `seed`.
pub fn mask(seed: &Seed, len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    apply_mask(seed, &mut out, true);
    out
}

/// The AEAD key for shares sent from `from` to `to`, from their X25519 shared secret (one key
/// per direction, each used once, so the zero nonce is never reused).
fn share_key(shared: &[u8; 32], from: ClientId, to: ClientId) -> Seed {
    let mut info = b"fedkit/secagg/share".to_vec();
    info.extend(from.to_le_bytes());
    info.extend(to.to_le_bytes());
    derive(shared, &info)
}

/// Encrypt `plain` from `from` to `to` (authenticated with both ids).
pub fn seal(shared: &[u8; 32], from: ClientId, to: ClientId, plain: &[u8]) -> Result<Vec<u8>> {
    let key = share_key(shared, from, to);
    let aad = [from.to_le_bytes(), to.to_le_bytes()].concat();
    ChaCha20Poly1305::new(&key.into())
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: plain, aad: &aad })
        .map_err(|_| Error::Method("secagg: encryption failed".into()))
}

/// Decrypt what [`seal`] made; a changed ciphertext (or one not from `from` to `to`) is an
/// error.
pub fn open(shared: &[u8; 32], from: ClientId, to: ClientId, sealed: &[u8]) -> Result<Vec<u8>> {
    let key = share_key(shared, from, to);
    let aad = [from.to_le_bytes(), to.to_le_bytes()].concat();
    ChaCha20Poly1305::new(&key.into())
        .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: sealed, aad: &aad })
        .map_err(|_| {
            Error::Method(format!(
                "secagg: the shares from client {from} to client {to} fail authentication (tampered)"
            ))
        })
}

/// A secret that gets shared: a P-256 scalar, as its canonical 32 bytes.
pub type Secret = [u8; 32];

type FieldShare = DefaultShare<IdentifierPrimeField<Scalar>, IdentifierPrimeField<Scalar>>;

/// Bytes of one share: the identifier's and the value's canonical encodings.
pub const SHARE_BYTES: usize = 64;

/// A fresh random secret.
pub fn random_secret(rng: &mut rand_secagg::rngs::StdRng) -> Secret {
    Scalar::random(rng).to_repr().into()
}

/// Split `secret` into `n` shares (share i for participant i), any `t` of which rebuild it.
pub fn split(secret: &Secret, t: usize, n: usize, rng: &mut rand_secagg::rngs::StdRng) -> Result<Vec<Vec<u8>>> {
    let s = scalar(secret).ok_or_else(|| Error::Method("secagg: a secret is not a field element".into()))?;
    let shares = shamir::split_secret::<FieldShare>(t, n, &IdentifierPrimeField(s), rng)
        .map_err(|e| Error::Method(format!("secagg: secret sharing failed: {e:?}")))?;
    Ok(shares
        .iter()
        .map(|sh| [sh.identifier().0.to_repr().as_slice(), sh.value().0.to_repr().as_slice()].concat())
        .collect())
}

fn scalar(b: &[u8]) -> Option<Scalar> {
    let a: [u8; 32] = b.try_into().ok()?;
    Option::from(Scalar::from_repr(a.into()))
}

/// Lagrange coefficients at 0, by share-identifier set: the SecAgg server rebuilds n secrets
/// whose shares mostly come from the same holders, so each set's coefficients are computed once
/// (O(t^2)) and every secret then costs O(t).
#[derive(Default)]
pub struct Combiner {
    cache: std::collections::HashMap<Vec<[u8; 32]>, Vec<Scalar>>,
}

impl Combiner {
    /// The secret of `shares` (at least t of them, from one sharing), like [`combine`].
    pub fn combine(&mut self, shares: &[Vec<u8>]) -> Result<Secret> {
        let malformed = || Error::Method("secagg: a malformed share".into());
        let mut ids = Vec::with_capacity(shares.len());
        let mut values = Vec::with_capacity(shares.len());
        for b in shares {
            if b.len() != SHARE_BYTES {
                return Err(malformed());
            }
            let id = scalar(&b[..32]).ok_or_else(malformed)?;
            values.push(scalar(&b[32..]).ok_or_else(malformed)?);
            ids.push(id);
        }
        let key: Vec<[u8; 32]> = ids.iter().map(|x| x.to_repr().into()).collect();
        if !self.cache.contains_key(&key) {
            let mut lambdas = Vec::with_capacity(ids.len());
            for (i, xi) in ids.iter().enumerate() {
                let (mut num, mut den) = (Scalar::ONE, Scalar::ONE);
                for (j, xj) in ids.iter().enumerate() {
                    if i != j {
                        num *= xj;
                        den *= *xj - xi;
                    }
                }
                let inv = Option::<Scalar>::from(den.invert())
                    .ok_or_else(|| Error::Method("secagg: two shares with one identifier".into()))?;
                lambdas.push(num * inv);
            }
            self.cache.insert(key.clone(), lambdas);
        }
        let lambdas = &self.cache[&key];
        let secret = lambdas.iter().zip(&values).fold(Scalar::ZERO, |acc, (l, y)| acc + *l * y);
        Ok(secret.to_repr().into())
    }
}

/// Rebuild a secret from at least t shares; a malformed share is an error.
pub fn combine(shares: &[Vec<u8>]) -> Result<Secret> {
    let parsed = shares
        .iter()
        .map(|b| {
            let ok = b.len() == SHARE_BYTES;
            match (ok.then(|| scalar(&b[..32])).flatten(), ok.then(|| scalar(&b[32..])).flatten()) {
                (Some(id), Some(v)) => {
                    Ok(FieldShare::with_identifier_and_value(IdentifierPrimeField(id), IdentifierPrimeField(v)))
                }
                _ => Err(Error::Method("secagg: a malformed share".into())),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let s = parsed.combine().map_err(|e| Error::Method(format!("secagg: cannot rebuild a secret: {e:?}")))?;
    Ok(s.0.to_repr().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_secagg::SeedableRng;

    #[test]
    fn agreement_is_symmetric_and_shares_rebuild_from_any_t() {
        let (a_sk, a_pk) = key_pair(&[1; 32], b"s");
        let (b_sk, b_pk) = key_pair(&[2; 32], b"s");
        assert_eq!(agree(&a_sk, &b_pk), agree(&b_sk, &a_pk));
        let mut rng = rand_secagg::rngs::StdRng::from_seed([3; 32]);
        let secret = random_secret(&mut rng);
        let shares = split(&secret, 3, 300, &mut rng).unwrap();
        assert_eq!(shares.len(), 300, "any cohort size");
        assert_eq!(combine(&shares[1..4]).unwrap(), secret);
        assert_eq!(combine(&[shares[0].clone(), shares[2].clone(), shares[299].clone()]).unwrap(), secret);
        assert!(combine(&[vec![1u8; 10]]).is_err(), "a malformed share");
        // The caching combiner rebuilds the same secrets as vsss-rs, for any share subset.
        let mut c = Combiner::default();
        for k in 0..5 {
            let other = random_secret(&mut rng);
            let more = split(&other, 3, 300, &mut rng).unwrap();
            let pick = [more[k].clone(), more[k + 7].clone(), more[299 - k].clone()];
            assert_eq!(c.combine(&pick).unwrap(), combine(&pick).unwrap());
            assert_eq!(c.combine(&pick).unwrap(), other);
        }
        assert!(c.combine(&[shares[0].clone(), shares[0].clone(), shares[1].clone()]).is_err(), "repeated id");
        assert_ne!(combine(&shares[..2]).unwrap_or([0; 32]), secret, "2 of a 3-threshold do not rebuild it");
        let sealed = seal(&[9; 32], 1, 2, b"share").unwrap();
        assert_eq!(open(&[9; 32], 1, 2, &sealed).unwrap(), b"share");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(open(&[9; 32], 1, 2, &bad).is_err());
        assert!(open(&[9; 32], 2, 1, &sealed).is_err(), "bound to its direction");
        // The blockwise stream is one stream: a long mask's prefix is the short mask.
        let long = mask(&[4; 32], 10_000);
        assert_eq!(&long[..37], mask(&[4; 32], 37).as_slice());
        let mut v = long.clone();
        apply_mask(&[4; 32], &mut v, false);
        assert!(v.iter().all(|x| *x == 0));
    }
}
