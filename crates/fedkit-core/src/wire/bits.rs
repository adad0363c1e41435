//! MSB-first bit packing for the wire blocks (b-bit levels, sign bits, Elias-gamma codes).

/// Appends bits to a byte vector through a 64-bit accumulator.
pub struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }
    /// The low `bits` (<= 57) bits of `v`, most significant first.
    pub fn write(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 57);
        self.acc = (self.acc << bits) | (v & ((1u64 << bits) - 1));
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
    }
    /// Elias-gamma code of `v` >= 1: floor(log2 v) zeros, then v in binary.
    pub fn gamma(&mut self, v: u64) {
        let k = 63 - v.leading_zeros();
        if 2 * k < 57 {
            self.write(v, 2 * k + 1);
        } else {
            self.write(0, k);
            self.write(v, k + 1);
        }
    }
    /// Flush the last partial byte, zero-padded.
    pub fn finish(mut self) {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
            self.n = 0;
        }
    }
}

/// Reads bits written by [`BitWriter`]; `None` past the end.
pub struct BitReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        BitReader { b, pos: 0 }
    }
    /// Bytes underneath.
    pub fn len(&self) -> usize {
        self.b.len()
    }
    fn bit(&mut self) -> Option<u64> {
        let byte = *self.b.get(self.pos / 8)?;
        let v = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(v as u64)
    }
    /// `bits` bits, most significant first.
    pub fn read(&mut self, bits: u32) -> Option<u64> {
        let mut v = 0;
        for _ in 0..bits {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
    /// An Elias-gamma code (at most 32 leading zeros).
    pub fn gamma(&mut self) -> Option<u64> {
        let mut k = 0;
        while self.bit()? == 0 {
            k += 1;
            if k > 32 {
                return None;
            }
        }
        Some((1 << k) | self.read(k)?)
    }
    /// True when only zero padding (less than a byte) remains.
    pub fn check_padding(&mut self) -> Option<()> {
        if self.b.len() * 8 - self.pos >= 8 {
            return None;
        }
        while self.pos < self.b.len() * 8 {
            if self.bit()? != 0 {
                return None;
            }
        }
        Some(())
    }
}
