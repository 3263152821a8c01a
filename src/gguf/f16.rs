//! IEEE half-precision conversion (round to nearest, ties to even).

/// Convert an `f32` to the bits of the nearest `f16` (ties to even; overflow
/// gives infinity; NaN stays NaN).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = (b >> 23) & 0xff;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return if man == 0 {
            sign | 0x7c00
        } else {
            sign | 0x7e00 | (man >> 13) as u16
        };
    }
    if exp > 112 {
        // normal f16 range (or overflow to infinity via the carry)
        let e = exp - 112;
        if e >= 0x1f {
            return sign | 0x7c00;
        }
        let mut h = (e << 10) | (man >> 13);
        let rest = man & 0x1fff;
        if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
            h += 1; // may carry into the exponent, up to 0x7c00 = infinity
        }
        return sign | h as u16;
    }
    if exp == 0 {
        return sign; // f32 subnormals are far below the f16 range
    }
    // f16 subnormal: value = full * 2^(exp-150) = m * 2^-24
    let shift = 126 - exp; // >= 14
    if shift > 24 {
        return sign;
    }
    let full = man | 0x80_0000;
    let mut m = full >> shift;
    let rest = full & ((1u32 << shift) - 1);
    let half = 1u32 << (shift - 1);
    if rest > half || (rest == half && m & 1 == 1) {
        m += 1; // may become 0x400, the smallest normal: still correct
    }
    sign | m as u16
}

/// Convert `f16` bits to `f32` (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        0 => {
            let v = man as f32 * (1.0 / 16_777_216.0);
            if sign != 0 {
                -v
            } else {
                v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // halfway to 65536 rounds to even = inf
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xfc00);
        let nan = f32_to_f16(f32::NAN);
        assert_eq!(nan & 0x7c00, 0x7c00);
        assert_ne!(nan & 0x03ff, 0);
        // smallest normal 2^-14 ≈ 6.1035e-5 and subnormals
        assert_eq!(f32_to_f16(6.103_515_6e-5), 0x0400);
        assert_eq!(f32_to_f16(6.0e-5), 0x03ef);
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001); // 2^-24
        assert_eq!(f32_to_f16(2.980_232_2e-8), 0x0000); // 2^-25: tie, rounds to even 0
        assert_eq!(f32_to_f16(4.5e-8), 0x0001);
        assert_eq!(f32_to_f16(8.940_697e-8), 0x0002); // 1.5 * 2^-24: tie to even 2
                                                      // ties in the normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0 + 1e-7), 0x3c01);
    }

    #[test]
    fn decode_and_round_trip() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x8001), -5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if !x.is_nan() {
                assert_eq!(f32_to_f16(x), h, "{h:#06x}");
            }
        }
    }
}
