use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    New(u16),
    Tuple(u8, i64),
    Named { a: Option<(u64, u32)>, b: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    flag: bool,
    small: i8,
    wide: u128,
    neg: i128,
    float: f64,
    c: char,
    queue: VecDeque<u8>,
    array: [u32; 3],
    kinds: Vec<Kind>,
    map: BTreeMap<u32, String>,
    unit: (),
}

fn sample() -> Sample {
    Sample {
        flag: true,
        small: -3,
        wide: u128::MAX - 5,
        neg: i128::MIN + 1,
        float: -1.5,
        c: 'ß',
        queue: VecDeque::from(vec![9, 8, 7]),
        array: [1, 2, 0xDEAD_BEEF],
        kinds: vec![
            Kind::Unit,
            Kind::New(0x1234),
            Kind::Tuple(5, -6),
            Kind::Named {
                a: Some((1, 2)),
                b: "héllo".into(),
            },
            Kind::Named {
                a: None,
                b: String::new(),
            },
        ],
        map: [(3, "three".into()), (1, "one".into())]
            .into_iter()
            .collect(),
        unit: (),
    }
}

#[test]
fn round_trip() {
    let s = sample();
    let bytes = encode(&s).unwrap();
    assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
}

#[test]
fn layout_is_fixed() {
    assert_eq!(encode(&0x0102_0304u32).unwrap(), [4, 3, 2, 1]);
    assert_eq!(encode(&-1i16).unwrap(), [0xFF, 0xFF]);
    assert_eq!(encode(&Some(false)).unwrap(), [1, 0]);
    assert_eq!(encode(&None::<u8>).unwrap(), [0]);
    assert_eq!(encode(&Kind::New(0x0201)).unwrap(), [1, 0, 0, 0, 1, 2]);
    assert_eq!(encode("ab").unwrap(), [2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    assert_eq!(encode(&[7u8, 8]).unwrap(), [7, 8], "arrays carry no length");
}

#[test]
fn maps_are_canonical_whatever_their_order() {
    let mut a = HashMap::new();
    let mut b = HashMap::new();
    for i in 0..200u32 {
        a.insert(i, i * 3);
    }
    for i in (0..200u32).rev() {
        b.insert(i, i * 3);
    }
    let bt: BTreeMap<u32, u32> = a.iter().map(|(&k, &v)| (k, v)).collect();
    assert_eq!(encode(&a).unwrap(), encode(&b).unwrap());
    // Little-endian keys sort by their bytes, not numerically, but the
    // order is the same for every map type.
    let ea = encode(&a).unwrap();
    assert_eq!(decode::<BTreeMap<u32, u32>>(&ea).unwrap(), bt);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let bytes = encode(&sample()).unwrap();
    // Every truncation fails cleanly.
    for n in 0..bytes.len() {
        assert!(decode::<Sample>(&bytes[..n]).is_err(), "prefix {n}");
    }
    // Trailing bytes are refused.
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        decode::<Sample>(&long),
        Err(CodecError::TrailingBytes { len: 1, .. })
    ));
    // Single-byte corruptions either decode to something or fail; never panic.
    for i in 0..bytes.len() {
        for x in [0x01, 0x80, 0xFF] {
            let mut b = bytes.clone();
            b[i] ^= x;
            let _ = decode::<Sample>(&b);
        }
    }
    // A bool that is not 0/1, a huge length, a bad variant.
    assert!(matches!(
        decode::<bool>(&[2]),
        Err(CodecError::Invalid { offset: 0, .. })
    ));
    let huge = u64::MAX.to_le_bytes();
    let e = decode::<Vec<u8>>(&huge).unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
    let e = decode::<Kind>(&[9, 0, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("variant 9"), "{e}");
    assert!(decode::<char>(&0xD800u32.to_le_bytes()).is_err());
    assert!(decode::<String>(&[1, 0, 0, 0, 0, 0, 0, 0, 0xFF]).is_err());
}

#[test]
fn hashing_sink_sees_the_same_bytes() {
    use sha2::{Digest, Sha256};
    let s = sample();
    let mut h = Sha256::new();
    encode_into(&mut h, &s).unwrap();
    let direct: [u8; 32] = h.finalize().into();
    let via_bytes: [u8; 32] = Sha256::digest(encode(&s).unwrap()).into();
    assert_eq!(direct, via_bytes);
}
