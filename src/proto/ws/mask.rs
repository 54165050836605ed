//! RFC 6455 §5.3 payload masking: `transformed[i] = original[i] XOR key[i mod 4]`.

/// Bytes masked per step: a fixed-size block the compiler turns into vector XORs.
const BLOCK: usize = 32;

/// The key as seen from payload byte number `offset`, repeated over a block.
fn pattern(key: [u8; 4], offset: usize) -> [u8; BLOCK] {
    let mut wide = [0u8; BLOCK];
    for (i, k) in wide.iter_mut().enumerate() {
        *k = key[(offset.wrapping_add(i)) % 4];
    }
    wide
}

/// XOR `buf` with `key`, where buf[0] is payload byte number `offset` (so masking can be streamed across reads).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let wide = pattern(key, offset);
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, k) in block.iter_mut().zip(wide) {
            *b ^= k;
        }
    }
    // Each whole block advances the key position by 32 (a multiple of 4), so the tail
    // starts at the same key phase as buf[0].
    for (b, k) in blocks.into_remainder().iter_mut().zip(wide) {
        *b ^= k;
    }
}

/// Appends `src` masked with `key` (src[0] is payload byte 0) to `out` in one pass, at
/// the speed of a copy (RFC 6455 §5.3: a client masks every frame it sends).
pub fn extend_masked(out: &mut Vec<u8>, src: &[u8], key: [u8; 4]) {
    let start = out.len();
    out.resize(start + src.len(), 0);
    let Some(dst) = out.get_mut(start..) else {
        return;
    };
    let wide = pattern(key, 0);
    let mut to = dst.chunks_exact_mut(BLOCK);
    let mut from = src.chunks_exact(BLOCK);
    for (d, s) in (&mut to).zip(&mut from) {
        for ((d, s), k) in d.iter_mut().zip(s).zip(wide) {
            *d = s ^ k;
        }
    }
    for ((d, s), k) in to
        .into_remainder()
        .iter_mut()
        .zip(from.remainder())
        .zip(wide)
    {
        *d = s ^ k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_byte_at_a_time_reference() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let backing: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        for len in 0..=40 {
            for offset in 0..8 {
                // Unaligned starts: slice the backing buffer at every start 0..8.
                for start in 0..8 {
                    let mut fast = backing.clone();
                    let mut slow = backing.clone();
                    apply_mask(&mut fast[start..start + len], key, offset);
                    reference(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "len {len} offset {offset} start {start}");
                }
            }
        }
    }

    #[test]
    fn streaming_in_pieces_equals_one_pass() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..=data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn extend_masked_equals_copy_then_mask() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(31)).collect();
        for len in [0, 1, 5, 31, 32, 33, 64, 100, 200] {
            let mut fused = vec![0xaa; 3];
            extend_masked(&mut fused, &data[..len], key);
            let mut slow = vec![0xaa; 3];
            slow.extend_from_slice(&data[..len]);
            reference(&mut slow[3..], key, 0);
            assert_eq!(fused, slow, "len {len}");
        }
    }

    #[test]
    fn rfc6455_section_5_7_masked_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn masking_twice_is_identity_and_huge_offsets_wrap() {
        let key = [9, 8, 7, 6];
        let mut buf = *b"some payload bytes";
        apply_mask(&mut buf, key, usize::MAX);
        apply_mask(&mut buf, key, usize::MAX);
        assert_eq!(&buf, b"some payload bytes");
        // usize::MAX % 4 == 3, and the phase must keep counting from there.
        let mut a = [0u8; 5];
        let mut b = [0u8; 5];
        apply_mask(&mut a, key, usize::MAX);
        reference(&mut b, key, 3);
        assert_eq!(a, b);
    }
}
