//! MurmurHash3 x64 128-bit (Austin Appleby's public-domain reference
//! algorithm), written out here because its output must never change: it
//! places backends in Maglev tables that every node computes on its own and
//! names derived EndpointSlices. `std`'s hashers make no such promise.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// The two 64-bit halves (h1, h2) of MurmurHash3_x64_128.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let mut blocks = data.chunks_exact(16);
    for block in blocks.by_ref() {
        let (lo, hi) = block.split_at(8);
        let k1 = u64::from_le_bytes(lo.try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(hi.try_into().expect("8 bytes"));

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2);
        h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);

        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1);
        h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    for (i, &byte) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(byte) << (8 * i);
        } else {
            k2 |= u64::from(byte) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(k1);
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the reference C implementation (as packaged for Python,
    /// `mmh3.hash64(data, seed, signed=False)`).
    #[test]
    fn matches_the_reference_implementation() {
        let cases: [(&[u8], u32, u64, u64); 10] = [
            (b"", 0, 0, 0),
            (b"hello", 0, 0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19),
            (b"10.0.0.1:80", 0, 0x6561d8b9fd8cfaee, 0x2ae810edd2f8b895),
            (b"12345678", 1, 0x56fe5fc4f894da5e, 0xc8a305e4eb9b56db),
            (b"123456789", 1, 0xf16b761fe114e80b, 0xbe5f6ae246129f16),
            (
                b"123456789abcdef",
                7,
                0xaefb7c70ab77f673,
                0xa9798823bc3f7d85,
            ),
            (
                b"123456789abcdefg",
                7,
                0xf378008e12826b77,
                0xbfc6e66be3822bfa,
            ),
            (
                b"172.16.255.254:65535/TCP",
                0,
                0xbcb914766d0ed023,
                0x1b1bc93f7c33767a,
            ),
            (
                b"The quick brown fox jumps over the lazy dog",
                42,
                0x740dcf93fe0bd5d7,
                0xc4546cf4ec705c8f,
            ),
            (
                b"0123456789abcdef0",
                0x9747b28c,
                0x993262a7b6af8d70,
                0xc738cec6e32ab89c,
            ),
        ];
        for (data, seed, h1, h2) in cases {
            assert_eq!(
                murmur3_x64_128(data, seed),
                (h1, h2),
                "{:?} seed {seed}",
                String::from_utf8_lossy(data)
            );
        }
    }
}
