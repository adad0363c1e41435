//! The uplink's wire form (issue 11): what the server receives from each client and how many
//! bytes it was.

use fedkit_core::wire::{self, EXTRA_KEY};
use fedkit_core::{ClientId, Error, Extra, Layout, Result, Update};

/// Turn each update into what the server receives and return the bytes they took.
/// - A compressed update carries its encoded message in the extra `wire`
///   (`fedkit_core::wire::EXTRA_KEY`): it is decoded against the model's layout, must give back
///   the update's values and extras exactly, and counts its own length. An update that a
///   later stage changed (an attack on a compressing algorithm, a clip after the compressor)
///   is what the client sends instead, uncompressed: it counts as a dense message.
/// - Any other update counts as the dense f32 message it would be (`wire::dense_len`).
///
/// Under secure aggregation a compressed update is refused: none of the compressors is linear
/// over the ring.
pub(crate) fn receive<'a>(
    layout_of: &dyn Fn(ClientId) -> &'a Layout,
    ups: &mut [Update],
    secure: bool,
) -> Result<usize> {
    let mut total = 0;
    for u in ups.iter_mut() {
        let Some(Extra::Bytes(bytes)) = u.extras.0.remove(EXTRA_KEY) else {
            total += wire::dense_len(u.delta.len(), &u.extras)?;
            continue;
        };
        if secure {
            return Err(Error::config(
                "secure_aggregation.use",
                "a compressed update cannot be summed in the ring (no fedkit compressor is linear over it): drop the compressor or secure aggregation",
            ));
        }
        // An update without model values (FedHeNN sends extras only) has the empty layout.
        let layout = if u.delta.is_empty() { &**u.delta.layout() } else { layout_of(u.client) };
        let m = wire::decode(&bytes, Some((wire::layout_id(layout), layout.total())))
            .map_err(|e| Error::Method(format!("client {}: its update: {e}", u.client)))?;
        let (values, extras) = m.values();
        let same = values.iter().zip(u.delta.as_slice()).all(|(a, b)| a.to_bits() == b.to_bits());
        total += if same && extras == u.extras { bytes.len() } else { wire::dense_len(u.delta.len(), &u.extras)? };
    }
    Ok(total)
}
