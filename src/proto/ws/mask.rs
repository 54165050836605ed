//! RFC 6455 §5.3 payload masking: `transformed[i] = original[i] XOR key[i mod 4]`.

/// XOR `buf` with `key`, where buf[0] is payload byte number `offset` (so masking can be streamed across reads).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // The key as seen from buf[0], repeated to 8 bytes, so that whole words can be XORed.
    let mut wide = [0u8; 8];
    for (i, k) in wide.iter_mut().enumerate() {
        *k = key[(offset.wrapping_add(i)) % 4];
    }
    let word = u64::from_ne_bytes(wide);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // Always 8 bytes (chunks_exact_mut), so the conversion cannot fail.
        if let Ok(bytes) = <&mut [u8; 8]>::try_from(chunk) {
            *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
        }
    }
    // Each whole chunk advances the key position by 8 (a multiple of 4), so the tail starts
    // at the same key phase as buf[0].
    for (b, k) in chunks.into_remainder().iter_mut().zip(wide) {
        *b ^= k;
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
