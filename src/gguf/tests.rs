#![allow(clippy::print_stderr)] // skip notes and timings
//! Cross-cutting tests: round trips, hostile input, LoRA files, inspection,
//! fixtures and the real SmolLM2 file when present.

use std::path::{Path, PathBuf};

use super::fixtures::{fixture_bytes, tiny_vocab, FIXTURE_FILES};
use super::rng::Rng;
use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gguf-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn every_value_type() -> Vec<(String, Value)> {
    let nested = Value::array(
        ValueType::Array,
        vec![
            Value::array(ValueType::I16, vec![Value::I16(-1), Value::I16(2)]),
            Value::array(ValueType::I16, vec![]),
        ],
    );
    vec![
        ("general.alignment".into(), Value::U32(64)),
        ("t.u8".into(), Value::U8(250)),
        ("t.i8".into(), Value::I8(-5)),
        ("t.u16".into(), Value::U16(65000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(-1.25e-3)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.false".into(), Value::Bool(false)),
        ("t.empty".into(), Value::string("")),
        ("t.unicode".into(), Value::string("héllo ▁wörld 🦀 \n\t\"")),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(std::f64::consts::PI)),
        (
            "t.strings".into(),
            Value::array(
                ValueType::String,
                vec![Value::string("a"), Value::string(""), Value::string("ü")],
            ),
        ),
        ("t.empty_array".into(), Value::array(ValueType::F32, vec![])),
        ("t.nested".into(), nested),
    ]
}

/// A file with every value type, alignment 64 and five tensors; the last
/// tensor ends on an alignment boundary, so the file has no trailing padding.
type ExpectedTensor = (String, Vec<u64>, GgmlType, Vec<u8>);

fn round_trip_writer() -> (GgufWriter, Vec<ExpectedTensor>) {
    let mut w = GgufWriter::new();
    for (k, v) in every_value_type() {
        w.set(k, v);
    }
    let f32s: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
    let f16s = [1.0f32, -2.0, 0.5, 65504.0, 0.0, -0.0, 3.0];
    let q8: Vec<u8> = (0..68).map(|i| (i * 7) as u8).collect();
    let i32s: Vec<u8> = (0..16i32).flat_map(|i| (-i).to_le_bytes()).collect();
    let last: Vec<f32> = (0..16).map(|i| i as f32).collect();
    w.add_tensor_f32("a.f32", &[3, 5], &f32s).unwrap();
    w.add_tensor_f16("b.f16", &[7], &f16s).unwrap();
    w.add_tensor_raw("c.q8", &[32, 2], GgmlType::Q8_0, q8.clone())
        .unwrap();
    w.add_tensor_raw("d.i32", &[2, 2, 2, 2], GgmlType::I32, i32s.clone())
        .unwrap();
    w.add_tensor_f32("e.last", &[16], &last).unwrap();
    let expected = vec![
        (
            "a.f32".to_string(),
            vec![3, 5],
            GgmlType::F32,
            f32s.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "b.f16".to_string(),
            vec![7],
            GgmlType::F16,
            f16s.iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect(),
        ),
        ("c.q8".to_string(), vec![32, 2], GgmlType::Q8_0, q8),
        ("d.i32".to_string(), vec![2, 2, 2, 2], GgmlType::I32, i32s),
        (
            "e.last".to_string(),
            vec![16],
            GgmlType::F32,
            last.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    (w, expected)
}

fn data_of(bytes: &[u8], f: &GgufFile, t: &TensorInfo) -> Vec<u8> {
    let start = (f.data_offset + t.offset) as usize;
    bytes[start..start + t.n_bytes().unwrap() as usize].to_vec()
}

#[test]
fn round_trip_preserves_everything() {
    let (w, expected) = round_trip_writer();
    let bytes = w.to_bytes().unwrap();
    assert_eq!(bytes, w.to_bytes().unwrap(), "writing twice differs");
    let f = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.metadata, every_value_type());
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.file_len, bytes.len() as u64);
    assert_eq!(f.tensors.len(), expected.len());
    for (t, (name, dims, ty, data)) in f.tensors.iter().zip(&expected) {
        assert_eq!((&t.name, &t.dims, t.ggml_type), (name, dims, *ty));
        assert_eq!(t.offset % 64, 0, "{name} misaligned");
        assert_eq!(&data_of(&bytes, &f, t), data, "{name} data");
    }
    // the last tensor ends exactly at the end of the file
    let last = f.tensors.last().unwrap();
    assert_eq!(f.data_offset + last.offset + 64, f.file_len);
    // padding bytes are zeros
    // padding between tensors is zeros (a.f32 holds 60 bytes, b.f16 starts at 64)
    let gap = (f.data_offset + 60) as usize;
    assert_eq!(f.tensors[1].offset, 64);
    assert_eq!(&bytes[gap..gap + 4], &[0, 0, 0, 0]);
    assert_eq!(f.get_u64("t.u8"), Some(250));
    assert_eq!(f.get_f64("t.i64"), Some(i64::MIN as f64));
    assert_eq!(f.get_str("t.unicode"), Some("héllo ▁wörld 🦀 \n\t\""));
    assert_eq!(f.tensor("c.q8").map(|t| t.dims.clone()), Some(vec![32, 2]));
    assert!(f.tensor("nope").is_none());
}

#[test]
fn files_on_disk_round_trip_and_decode_f16() {
    let dir = temp_dir("disk");
    let (w, _) = round_trip_writer();
    let path = dir.join("rt.gguf");
    w.write(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());
    let f = GgufFile::open(&path).unwrap();
    let t = f.tensor("b.f16").unwrap();
    assert_eq!(
        f.read_tensor_f32(&path, t).unwrap(),
        vec![1.0, -2.0, 0.5, 65504.0, 0.0, -0.0, 3.0]
    );
    let t = f.tensor("a.f32").unwrap();
    assert_eq!(f.read_tensor_f32(&path, t).unwrap()[14], 4.0);
    let q = f.tensor("c.q8").unwrap();
    let err = f.read_tensor_f32(&path, q).unwrap_err().to_string();
    assert!(err.contains("Q8_0") && err.contains("c.q8"), "{err}");
    assert_eq!(f.read_tensor_data(&path, q).unwrap()[1], 7);
    // only the renamed file is left behind: no temporaries
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("rt.gguf")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_atomic_write_leaves_nothing() {
    let dir = temp_dir("atomic");
    let target = dir.join("x.gguf");
    std::fs::create_dir(&target).unwrap(); // rename over a directory fails
    std::fs::write(target.join("keep"), b"k").unwrap();
    let (w, _) = round_trip_writer();
    let err = w.write(&target).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err}");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("x.gguf")]);
    assert!(w.write(&dir.join("missing/dir/y.gguf")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn minimal_header_bytes() {
    let mut w = GgufWriter::new();
    w.set("a", Value::string("b"));
    let bytes = w.to_bytes().unwrap();
    #[rustfmt::skip]
    let mut expected: Vec<u8> = vec![
        b'G', b'G', b'U', b'F',
        3, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, // tensors
        1, 0, 0, 0, 0, 0, 0, 0, // kvs
        1, 0, 0, 0, 0, 0, 0, 0, b'a',
        8, 0, 0, 0, // string
        1, 0, 0, 0, 0, 0, 0, 0, b'b',
    ];
    assert_eq!(expected.len(), 46);
    expected.resize(64, 0);
    assert_eq!(bytes, expected);
    let f = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!((f.data_offset, f.alignment, f.version), (64, 32, 3));
    assert_eq!(f.get_str("a"), Some("b"));
}

#[test]
fn every_truncation_is_an_error() {
    let (w, _) = round_trip_writer();
    let bytes = w.to_bytes().unwrap();
    assert!(GgufFile::from_bytes(&bytes).is_ok());
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(&bytes[..len]);
        assert!(r.is_err(), "truncated at {len} of {} parsed", bytes.len());
    }
    let err = GgufFile::from_bytes(&bytes[..20]).unwrap_err();
    assert!(
        matches!(err, GgufError::Truncated { offset: 16, .. }),
        "{err}"
    );
    let err = GgufFile::from_bytes(&bytes[..30]).unwrap_err();
    assert!(
        matches!(err, GgufError::TooLarge { count: 18, .. }),
        "{err}"
    );
    let err = GgufFile::from_bytes(&bytes[..400]).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn random_mutations_never_panic() {
    let (w, _) = round_trip_writer();
    let bytes = w.to_bytes().unwrap();
    let header_len = GgufFile::from_bytes(&bytes).unwrap().data_offset as usize;
    let mut rng = Rng::new(0xf022);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3000 {
        let mut m = bytes.clone();
        let flips = 1 + (rng.next_u64() % 4) as usize;
        for _ in 0..flips {
            let limit = if rng.next_u64() % 5 == 0 {
                m.len()
            } else {
                header_len
            };
            let pos = (rng.next_u64() % limit as u64) as usize;
            m[pos] = match rng.next_u64() % 3 {
                0 => m[pos] ^ (1 << (rng.next_u64() % 8)),
                1 => 0xff,
                _ => rng.next_u64() as u8,
            };
        }
        match GgufFile::from_bytes(&m) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // both outcomes occur: the mutations reach data (Ok) and structure (Err)
    assert!(ok > 50 && err > 500, "ok {ok}, err {err}");
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

#[test]
fn absurd_counts_fail_fast() {
    let mut b = header(0, 1 << 60);
    b.resize(200, 0);
    let err = GgufFile::from_bytes(&b).unwrap_err();
    assert!(
        matches!(err, GgufError::TooLarge { count, .. } if count == 1 << 60),
        "{err}"
    );
    let mut b = header(1 << 60, 0);
    b.resize(200, 0);
    assert!(matches!(
        GgufFile::from_bytes(&b),
        Err(GgufError::TooLarge { .. })
    ));
    let mut b = header(u64::MAX, u64::MAX);
    b.resize(200, 0);
    assert!(GgufFile::from_bytes(&b).is_err());

    // key with a 2^60-byte length
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.resize(200, 0);
    let err = GgufFile::from_bytes(&b).unwrap_err();
    assert!(
        matches!(err, GgufError::Truncated { needed, .. } if needed == 1 << 60),
        "{err}"
    );

    // array of 2^60 u8 and of 2^60 strings
    for elem in [ValueType::U8, ValueType::String, ValueType::Array] {
        let mut b = header(0, 1);
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&ValueType::Array.id().to_le_bytes());
        b.extend_from_slice(&elem.id().to_le_bytes());
        b.extend_from_slice(&(1u64 << 60).to_le_bytes());
        b.resize(300, 0);
        let err = GgufFile::from_bytes(&b).unwrap_err();
        assert!(matches!(err, GgufError::TooLarge { .. }), "{err}");
    }

    // arrays nested deeper than the limit
    let mut b = header(0, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&ValueType::Array.id().to_le_bytes());
    for _ in 0..100 {
        b.extend_from_slice(&ValueType::Array.id().to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.resize(b.len() + 64, 0);
    let err = GgufFile::from_bytes(&b).unwrap_err();
    assert!(matches!(err, GgufError::NestedTooDeep { .. }), "{err}");
}

fn tensor_file(name_b: &str, offset_b: u64, align: Option<u32>) -> Vec<u8> {
    let mut b = header(2, u64::from(align.is_some()));
    let put_str = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    if let Some(a) = align {
        put_str(&mut b, "general.alignment");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&a.to_le_bytes());
    }
    for (name, offset) in [("a", 0u64), (name_b, offset_b)] {
        put_str(&mut b, name);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    let data_offset = b.len().next_multiple_of(32);
    b.resize(data_offset + 64, 0);
    b
}

#[test]
fn structural_checks() {
    assert!(GgufFile::from_bytes(&tensor_file("b", 32, None)).is_ok());
    let e = GgufFile::from_bytes(&tensor_file("a", 32, None)).unwrap_err();
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e}");
    let e = GgufFile::from_bytes(&tensor_file("b", 16, None)).unwrap_err();
    assert!(
        matches!(e, GgufError::TensorMisaligned { offset: 16, .. }),
        "{e}"
    );
    let e = GgufFile::from_bytes(&tensor_file("b", 64, None)).unwrap_err();
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    let e = GgufFile::from_bytes(&tensor_file("b", u64::MAX - 31, None)).unwrap_err();
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    for bad in [0, 3, 48] {
        let e = GgufFile::from_bytes(&tensor_file("b", 32, Some(bad))).unwrap_err();
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{bad}: {e}");
    }
    assert!(GgufFile::from_bytes(&tensor_file("b", 16, Some(16))).is_ok());

    let mut w = GgufWriter::new();
    w.set("k", Value::U8(1));
    let mut b = w.to_bytes().unwrap();
    b[16] = 2; // two KVs: the same key twice
    let kv = b[24..24 + 8 + 1 + 4 + 1].to_vec();
    b.splice(38..38, kv);
    let e = GgufFile::from_bytes(&b).unwrap_err();
    assert!(matches!(e, GgufError::DuplicateKey { .. }), "{e}");

    let mut b = w.to_bytes().unwrap();
    b[4] = 1;
    let e = GgufFile::from_bytes(&b).unwrap_err();
    assert!(e.to_string().contains("unsupported GGUF version 1"), "{e}");
    b[4] = 2;
    assert!(GgufFile::from_bytes(&b).is_ok());
}

#[test]
fn not_gguf_names_the_path() {
    let dir = temp_dir("magic");
    let path = dir.join("model.bin");
    std::fs::write(&path, b"GGML....................").unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("model.bin: not a GGUF file"), "{e}");
    assert!(e.contains("expected \"GGUF\""), "{e}");
    let e = GgufFile::open(&dir.join("absent.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(GgufFile::from_bytes(b"GG").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_bad_tensors_and_arrays() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor_f32("x", &[3], &[1.0, 2.0]),
        Err(GgufError::DataLength {
            expected: 12,
            got: 8,
            ..
        })
    ));
    assert!(w.add_tensor_f32("x", &[1, 1, 1, 1, 1], &[1.0]).is_err());
    assert!(w
        .add_tensor_raw("q", &[16], GgmlType::Q4_0, vec![0; 9])
        .is_err());
    w.add_tensor_f32("x", &[2], &[1.0, 2.0]).unwrap();
    assert!(w.add_tensor_f32("x", &[2], &[1.0, 2.0]).is_err());
    w.set(
        "m",
        Value::array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]),
    );
    assert!(matches!(w.to_bytes(), Err(GgufError::MixedArray { .. })));
    w.set("m", Value::U8(1))
        .set("general.alignment", Value::U32(12));
    assert!(matches!(w.to_bytes(), Err(GgufError::BadAlignment { .. })));
    w.set("general.alignment", Value::U32(8));
    let f = GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
    // `set` replaced in place: order is m, general.alignment
    let keys: Vec<_> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["m", "general.alignment"]);
    assert_eq!(f.alignment, 8);
}

fn tiny_model() -> GgufFile {
    let bytes = tiny_llama(&TinyLlamaConfig::default(), 1)
        .unwrap()
        .to_bytes()
        .unwrap();
    GgufFile::from_bytes(&bytes).unwrap()
}

#[test]
fn lora_adapter_file_layout() {
    let dir = temp_dir("lora");
    let path = dir.join("a.gguf");
    let t = LoraTensor {
        base_name: "blk.0.attn_q.weight".into(),
        n_in: 3,
        n_out: 2,
        rank: 2,
        a: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        b: vec![-1.0, -2.0, -3.0, -4.0],
    };
    let extra = [("general.name".to_string(), Value::string("x"))];
    write_lora_adapter(&path, "llama", 8.0, std::slice::from_ref(&t), &extra).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let keys: Vec<_> = f
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("general.type", Value::string("adapter")),
            ("general.architecture", Value::string("llama")),
            ("adapter.type", Value::string("lora")),
            ("adapter.lora.alpha", Value::F32(8.0)),
            ("general.name", Value::string("x")),
        ]
    );
    let names: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("blk.0.attn_q.weight.lora_a", vec![3, 2]),
            ("blk.0.attn_q.weight.lora_b", vec![2, 2]),
        ]
    );
    assert!(f.tensors.iter().all(|t| t.ggml_type == GgmlType::F32));
    assert_eq!(f.alignment, 32);
    assert_eq!(f.read_tensor_f32(&path, &f.tensors[0]).unwrap(), t.a);
    assert_eq!(f.read_tensor_f32(&path, &f.tensors[1]).unwrap(), t.b);

    let bad = LoraTensor { rank: 3, ..t };
    let e = write_lora_adapter(&path, "llama", 8.0, &[bad], &[]).unwrap_err();
    assert!(matches!(e, GgufError::LoraShape { .. }), "{e}");
    // the earlier file is intact
    assert!(GgufFile::open(&path).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lora_adapter_reads_back_f16_and_alpha_zero() {
    let dir = temp_dir("lora-read");
    let path = dir.join("a.gguf");
    // values exact in F16
    let t = LoraTensor {
        base_name: "blk.1.ffn_up.weight".into(),
        n_in: 3,
        n_out: 2,
        rank: 2,
        a: vec![1.0, -2.0, 0.5, 0.25, 3.0, -1.5],
        b: vec![0.125, -4.0, 2.0, 1.0],
    };
    // a layout key among the extras does not override the writer's own
    let extra = [
        ("adapter.lora.alpha".to_string(), Value::F32(7.0)),
        ("general.name".to_string(), Value::string("x")),
    ];
    lora_adapter_writer_as(
        "llama",
        0.0,
        std::slice::from_ref(&t),
        &extra,
        GgmlType::F16,
    )
    .unwrap()
    .write(&path)
    .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.tensors.iter().all(|t| t.ggml_type == GgmlType::F16));
    let ad = LoraAdapter::read(&path).unwrap();
    assert_eq!(ad.architecture, "llama");
    // alpha 0 means scale 1 to llama.cpp
    assert_eq!(ad.alpha, None);
    assert_eq!(ad.scale(&ad.tensors[0]), 1.0);
    assert_eq!(ad.tensors, vec![t.clone()]);
    assert!(ad
        .metadata
        .iter()
        .any(|(k, v)| k == "general.name" && *v == Value::string("x")));

    // with alpha 8 at rank 2 the scale is 4
    write_lora_adapter(&path, "llama", 8.0, std::slice::from_ref(&t), &[]).unwrap();
    let ad = LoraAdapter::read(&path).unwrap();
    assert_eq!((ad.alpha, ad.scale(&ad.tensors[0])), (Some(8.0), 4.0));

    // a model is not an adapter
    let model = dir.join("m.gguf");
    std::fs::write(&model, &fixture_bytes().unwrap()[0]).unwrap();
    let e = LoraAdapter::read(&model).unwrap_err();
    assert!(matches!(e, GgufError::NotLoraAdapter { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lora_for_tiny_model() {
    let m = tiny_model();
    let ts = lora_for_model(&m, &["attn_q", "attn_v", "ffn_up"], 4, LoraInit::Zero, 3).unwrap();
    let got: Vec<_> = ts
        .iter()
        .map(|t| (t.base_name.as_str(), t.n_in, t.n_out))
        .collect();
    assert_eq!(
        got,
        vec![
            ("blk.0.attn_q.weight", 64, 64),
            ("blk.0.attn_v.weight", 64, 32),
            ("blk.0.ffn_up.weight", 64, 128),
            ("blk.1.attn_q.weight", 64, 64),
            ("blk.1.attn_v.weight", 64, 32),
            ("blk.1.ffn_up.weight", 64, 128),
        ]
    );
    for t in &ts {
        assert_eq!((t.rank, t.a.len(), t.b.len()), (4, 4 * t.n_in, t.n_out * 4));
        assert!(t.b.iter().all(|&x| x == 0.0));
        assert!(t.a.iter().filter(|&&x| x != 0.0).count() > t.a.len() / 2);
        let rms = (t.a.iter().map(|x| x * x).sum::<f32>() / t.a.len() as f32).sqrt();
        assert!((rms - 0.125).abs() < 0.03, "{rms}");
    }
    // deterministic, seed-dependent
    let again = lora_for_model(&m, &["attn_q", "attn_v", "ffn_up"], 4, LoraInit::Zero, 3).unwrap();
    assert_eq!(ts, again);
    let other = lora_for_model(&m, &["attn_q"], 4, LoraInit::Zero, 4).unwrap();
    assert_ne!(other[0].a, ts[0].a);
    let r = lora_for_model(
        &m,
        &["ffn_down"],
        2,
        LoraInit::Random {
            std_a: 1.0,
            std_b: 0.5,
        },
        1,
    )
    .unwrap();
    assert_eq!((r[0].n_in, r[0].n_out), (128, 64));
    assert!(r[0].b.iter().any(|&x| x != 0.0));

    let e = lora_for_model(&m, &["attn_q", "attn_qq"], 4, LoraInit::Zero, 1).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("`attn_qq`"), "{msg}");
    assert!(
        msg.contains("attn_k, attn_output, attn_q, attn_v, ffn_down, ffn_gate, ffn_up"),
        "{msg}"
    );
    // norms are 1-D: not targets
    assert!(lora_for_model(&m, &["attn_norm"], 4, LoraInit::Zero, 1).is_err());
    assert!(lora_for_model(&m, &["attn_q"], 0, LoraInit::Zero, 1).is_err());
}

#[test]
fn inspect_tiny_model_and_adapter() {
    let m = tiny_model();
    let i = Inspection::from_file(&m);
    assert_eq!(i.kind, FileKind::Model);
    assert_eq!(i.architecture.as_deref(), Some("llama"));
    assert_eq!(i.name.as_deref(), Some("tiny-llama"));
    assert_eq!(i.file_type.as_deref(), Some("ALL_F32"));
    assert_eq!(i.vocab_size, Some(320));
    assert_eq!(i.tokenizer_model.as_deref(), Some("llama"));
    assert!(i.has_chat_template);
    assert_eq!(i.n_tensors, 3 + 2 * 9);
    assert_eq!(i.tensor_types, vec![("F32".to_string(), 21)]);
    let e = 64u64;
    let per_block = 2 * e + e * e * 2 + e * 32 * 2 + 3 * e * 128;
    assert_eq!(i.n_parameters, 2 * e * 320 + e + 2 * per_block);
    let hp: Vec<(&str, &str)> = i
        .hyperparameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(hp.contains(&("block_count", "2")));
    assert!(hp.contains(&("attention.head_count_kv", "2")));
    assert!(hp.contains(&("rope.freq_base", "10000")));
    assert!(hp.contains(&("vocab_size", "320")));
    assert_eq!(i.lora_rank, None);
    assert!(i.lora_targets.is_empty());

    let mut ts = lora_for_model(&m, &["attn_q", "ffn_up"], 4, LoraInit::Zero, 1).unwrap();
    // renumber to check the natural block order: 10 after 2
    ts[0].base_name = "blk.10.attn_q.weight".into();
    ts[1].base_name = "blk.2.ffn_up.weight".into();
    let a = lora_adapter_writer("llama", 16.0, &ts, &[])
        .unwrap()
        .to_bytes()
        .unwrap();
    let i = Inspection::from_file(&GgufFile::from_bytes(&a).unwrap());
    assert_eq!(i.kind, FileKind::LoraAdapter);
    assert_eq!(i.lora_rank, Some(4));
    assert_eq!(i.lora_alpha, Some(16.0));
    assert_eq!(
        i.lora_targets,
        [
            "blk.1.attn_q.weight",
            "blk.1.ffn_up.weight",
            "blk.2.ffn_up.weight",
            "blk.10.attn_q.weight"
        ]
    );
}

#[test]
fn fixtures_are_deterministic_and_consistent() {
    let a = fixture_bytes().unwrap();
    assert_eq!(a, fixture_bytes().unwrap());
    assert_eq!(a.len(), FIXTURE_FILES.len());
    let files: Vec<GgufFile> = a.iter().map(|b| GgufFile::from_bytes(b).unwrap()).collect();
    assert!(a[0].len() < 1_000_000, "{} bytes", a[0].len());
    assert_ne!(a[0], a[1]);
    let tokens = |f: &GgufFile| f.get("tokenizer.ggml.tokens").cloned();
    assert_eq!(tokens(&files[0]), tokens(&files[1]));
    let (t0, t2) = (tokens(&files[0]).unwrap(), tokens(&files[2]).unwrap());
    let (t0, t2) = (t0.as_array().unwrap(), t2.as_array().unwrap());
    assert_eq!(t0.items.len(), t2.items.len());
    let diffs: Vec<usize> = (0..t0.items.len())
        .filter(|&i| t0.items[i] != t2.items[i])
        .collect();
    assert_eq!(diffs, vec![300]);
    // same weights as the base model
    let w = |i: usize| {
        let f = &files[i];
        data_of(&a[i], f, f.tensor("blk.1.ffn_down.weight").unwrap())
    };
    assert_eq!(w(0), w(2));
    assert_ne!(w(0), w(1));

    let kinds: Vec<_> = files[3..]
        .iter()
        .map(|f| {
            (
                Inspection::from_file(f).kind,
                f.architecture().map(str::to_string),
            )
        })
        .collect();
    assert!(kinds.iter().all(|k| k.0 == FileKind::LoraAdapter));
    assert_eq!(kinds[2].1.as_deref(), Some("gemma3"));
    let zero = &files[3];
    for t in zero.tensors.iter().filter(|t| t.name.ends_with(".lora_b")) {
        assert!(
            data_of(&a[3], zero, t).iter().all(|&b| b == 0),
            "{}",
            t.name
        );
    }
    let random = &files[4];
    let b = random.tensor("blk.0.attn_q.weight.lora_b").unwrap();
    assert!(data_of(&a[4], random, b).iter().any(|&x| x != 0));
    assert_eq!(Inspection::from_file(random).lora_targets.len(), 6);

    // the bigger-vocabulary config
    let cfg = TinyLlamaConfig {
        extra_tokens: 7,
        ..Default::default()
    };
    assert_eq!(tiny_vocab(&cfg).len(), 327);
    let v = tiny_vocab(&TinyLlamaConfig::default());
    assert_eq!(v[261].0, "▁");
    assert_eq!(v[5].0, "<0x00>");
    assert_eq!(v[260].0, "<0xFF>");
    assert_eq!(v[4], ("<|im_end|>".to_string(), 0.0, 3));

    let dir = temp_dir("fixtures");
    let paths = write_fixtures(&dir).unwrap();
    for (p, bytes) in paths.iter().zip(&a) {
        assert_eq!(&std::fs::read(p).unwrap(), bytes);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Logit spread of the tiny model for a unit-RMS hidden state: a few nats.
#[test]
fn tiny_model_logits_are_peaked_not_degenerate() {
    let w = tiny_llama(&TinyLlamaConfig::default(), 1)
        .unwrap()
        .to_bytes()
        .unwrap();
    let f = GgufFile::from_bytes(&w).unwrap();
    let out = f.tensor("output.weight").unwrap();
    let vals = reader_f32(&w, &f, out);
    let mut h = Rng::new(5);
    let h: Vec<f32> = (0..64).map(|_| h.normal() as f32).collect();
    let logits: Vec<f32> = vals
        .chunks(64)
        .map(|row| row.iter().zip(&h).map(|(a, b)| a * b).sum())
        .collect();
    assert_eq!(logits.len(), 320);
    let mean = logits.iter().sum::<f32>() / 320.0;
    let std = (logits.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 320.0).sqrt();
    assert!((1.5..6.0).contains(&std), "logit std {std}");
}

fn reader_f32(bytes: &[u8], f: &GgufFile, t: &TensorInfo) -> Vec<f32> {
    data_of(bytes, f, t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

const SMOLLM2: &str = "/work/main/gguf/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn real_smollm2_file() {
    let path = Path::new(SMOLLM2);
    if !path.exists() {
        eprintln!("note: {SMOLLM2} absent; skipping the real-model check");
        return;
    }
    let f = GgufFile::open(path).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.arch_key("block_count").and_then(Value::as_u64), Some(30));
    assert_eq!(
        f.arch_key("embedding_length").and_then(Value::as_u64),
        Some(576)
    );
    assert!(f.tensor("output.weight").is_none());
    assert!(f.get_str("tokenizer.chat_template").is_some());
    let i = Inspection::from_file(&f);
    assert_eq!(i.kind, FileKind::Model);
    assert_eq!(i.vocab_size, Some(49152));
    assert!(
        i.tensor_types.iter().any(|(t, _)| t == "Q4_1"),
        "{:?}",
        i.tensor_types
    );
    assert!(
        i.n_parameters > 130_000_000 && i.n_parameters < 140_000_000,
        "{}",
        i.n_parameters
    );
    let ts = lora_for_model(&f, &["attn_q"], 8, LoraInit::Zero, 1).unwrap();
    assert_eq!(ts.len(), 30);
    assert_eq!((ts[0].n_in, ts[0].n_out), (576, 576));
    let v = lora_for_model(&f, &["attn_v"], 8, LoraInit::Zero, 1).unwrap();
    assert_eq!((v[0].n_in, v[0].n_out), (576, 192));
    // a small F32 tensor reads back
    let norm = f.tensor("blk.0.attn_norm.weight").unwrap();
    let values = f.read_tensor_f32(path, norm).unwrap();
    assert_eq!(values.len(), 576);
    assert!(values.iter().all(|x| x.is_finite()));
}
