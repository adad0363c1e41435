//! The one binary encoding of fedkit's saved and sent state: checkpoints, algorithm and stage
//! state, the wire form's extras block and the secure-aggregation messages. It is
//! [postcard](https://postcard.jamesmunns.com/wire-format) (a maintained serde format with a
//! documented, stable wire layout: varint integers and lengths, little-endian floats), which
//! replaced the unmaintained bincode 1.x.
//!
//! Decoding untrusted or damaged bytes never panics, and a forged length cannot make it allocate
//! without bound (serde pre-allocates at most about 1 MiB from a claimed length; postcard reads
//! every element after that); trailing bytes are refused, so a value read back is exactly what
//! was written.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Encode `v`; `what` names it in an error.
pub fn to_bytes<T: Serialize + ?Sized>(v: &T, what: &str) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Method(format!("cannot encode {what}: {e}")))
}

/// Encode `v` straight into `w` (a file), never holding the whole encoding in memory.
pub fn to_writer<T: Serialize + ?Sized, W: std::io::Write>(v: &T, w: W, what: &str) -> Result<()> {
    postcard::to_io(v, w).map(|_| ()).map_err(|e| Error::Method(format!("cannot encode {what}: {e}")))
}

/// Decode a `T` that fills `b` exactly; `what` names it in an error.
pub fn from_bytes<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    let (v, rest) =
        postcard::take_from_bytes::<T>(b).map_err(|e| Error::Data(format!("a malformed or truncated {what}: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::Data(format!("a malformed {what}: {} bytes after its end", rest.len())));
    }
    Ok(v)
}

/// The encoded length of `v`, without keeping the bytes.
pub fn encoded_len<T: Serialize + ?Sized>(v: &T, what: &str) -> Result<usize> {
    postcard::serialize_with_flavor(v, postcard::ser_flavors::Size::default())
        .map_err(|e| Error::Method(format!("cannot encode {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Extra, Extras};

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut e = Extras::default();
        e.0.insert("c".into(), Extra::Vector(vec![1.5, -2.0]));
        e.0.insert("n".into(), Extra::Scalar(3.25));
        let b = to_bytes(&e, "extras").unwrap();
        assert_eq!(encoded_len(&e, "extras").unwrap(), b.len());
        assert_eq!(from_bytes::<Extras>(&b, "extras").unwrap(), e);
        // Truncated, extended and forged-length inputs are errors.
        assert!(from_bytes::<Extras>(&b[..b.len() - 1], "extras").unwrap_err().to_string().contains("truncated"));
        let mut long = b.clone();
        long.push(0);
        assert!(from_bytes::<Extras>(&long, "extras").unwrap_err().to_string().contains("after its end"));
        let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(from_bytes::<Vec<f32>>(&huge, "vector").is_err());
    }
}
