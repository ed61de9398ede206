use super::*;
use half::f16;
use serde_json::json;

// ---- a small GGUF writer ----

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

/// Builds a GGUF in memory: metadata entries, then tensors laid out at aligned offsets.
struct Writer {
    version: u32,
    alignment: usize,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
            data: Vec::new(),
        }
    }

    fn kv_raw(&mut self, key: &str, ty: u32, payload: &[u8]) -> &mut Self {
        put_str(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(payload);
        self.n_kv += 1;
        self
    }

    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv_raw(key, 6, &v.to_le_bytes())
    }

    fn kv_bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.kv_raw(key, 7, &[v as u8])
    }

    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut p = Vec::new();
        put_str(&mut p, v);
        self.kv_raw(key, 8, &p)
    }

    fn kv_strs(&mut self, key: &str, items: &[&str]) -> &mut Self {
        let mut p = Vec::new();
        p.extend(8u32.to_le_bytes());
        p.extend((items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut p, s);
        }
        self.kv_raw(key, 9, &p)
    }

    fn kv_i32s(&mut self, key: &str, items: &[i32]) -> &mut Self {
        let mut p = Vec::new();
        p.extend(5u32.to_le_bytes());
        p.extend((items.len() as u64).to_le_bytes());
        for v in items {
            p.extend(v.to_le_bytes());
        }
        self.kv_raw(key, 9, &p)
    }

    /// A tensor with ggml dims `ne` (innermost first) and raw data bytes.
    fn tensor(&mut self, name: &str, ne: &[u64], ty: GgmlType, data: &[u8]) -> &mut Self {
        while self.data.len() % self.alignment != 0 {
            self.data.push(0);
        }
        put_str(&mut self.infos, name);
        self.infos.extend((ne.len() as u32).to_le_bytes());
        for d in ne {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.id().to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(data);
        self.n_tensors += 1;
        self
    }

    fn tensor_f32(&mut self, name: &str, ne: &[u64], values: &[f32]) -> &mut Self {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, ne, GgmlType::F32, &data)
    }

    fn finish(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        while out.len() % self.alignment != 0 {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}

fn h(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

// ---- blocks with known values, packed from the ggml layouts ----

/// Q8_0: scale 0.5, quants -16..15.
fn q8_0_block() -> (Vec<u8>, Vec<f32>) {
    let mut b = h(0.5).to_vec();
    let q: Vec<i8> = (0..32).map(|i| i as i8 - 16).collect();
    b.extend(q.iter().map(|&v| v as u8));
    (b, q.iter().map(|&v| v as f32 * 0.5).collect())
}

/// Q4_0: scale 0.25; element j is in the low nibble of byte j, element j + 16 in its high
/// nibble; the stored 4-bit value is offset by 8.
fn q4_0_block() -> (Vec<u8>, Vec<f32>) {
    let mut b = h(0.25).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut want: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.25).collect();
    want.extend((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.25));
    (b, want)
}

/// Q4_1: scale 0.5, min -1; same nibble order, value = d * q + m.
fn q4_1_block() -> (Vec<u8>, Vec<f32>) {
    let mut b = h(0.5).to_vec();
    b.extend(h(-1.0));
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut want: Vec<f32> = (0..16).map(|j| j as f32 * 0.5 - 1.0).collect();
    want.extend((0..16).map(|j| (15 - j) as f32 * 0.5 - 1.0));
    (b, want)
}

/// Q5_0 / Q5_1: 5-bit values v_i = (7 i + 3) mod 32, fifth bits in a u32 (bit i for element i).
fn q5_values() -> Vec<u8> {
    (0..32u32).map(|i| ((7 * i + 3) % 32) as u8).collect()
}

fn q5_pack(v: &[u8]) -> Vec<u8> {
    let qh: u32 = (0..32).map(|i| ((v[i] as u32 >> 4) & 1) << i).sum();
    let mut b = qh.to_le_bytes().to_vec();
    b.extend((0..16).map(|j| (v[j] & 0x0F) | ((v[j + 16] & 0x0F) << 4)));
    b
}

fn q5_0_block() -> (Vec<u8>, Vec<f32>) {
    let v = q5_values();
    let mut b = h(2.0).to_vec();
    b.extend(q5_pack(&v));
    (b, v.iter().map(|&q| (q as f32 - 16.0) * 2.0).collect())
}

fn q5_1_block() -> (Vec<u8>, Vec<f32>) {
    let v = q5_values();
    let mut b = h(0.125).to_vec();
    b.extend(h(3.0));
    b.extend(q5_pack(&v));
    (b, v.iter().map(|&q| q as f32 * 0.125 + 3.0).collect())
}

/// 6-bit scales and mins of the eight sub-blocks of a Q4_K/Q5_K test block (sub-blocks 4-7
/// above 15, so that their top bits matter).
const K_SCALES: [u8; 8] = [1, 2, 3, 4, 17, 33, 50, 63];
const K_MINS: [u8; 8] = [0, 5, 10, 15, 20, 40, 60, 63];

/// The 12-byte packing: bytes 0-3 scales 0-3 (+ top 2 bits of scales 4-7 in bits 6-7),
/// bytes 4-7 mins 0-3 (+ top bits of mins 4-7), bytes 8-11 low nibbles of scale/min 4-7.
fn k_scales_pack() -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = K_SCALES[j] | ((K_SCALES[j + 4] >> 4) << 6);
        s[j + 4] = K_MINS[j] | ((K_MINS[j + 4] >> 4) << 6);
        s[j + 8] = (K_SCALES[j + 4] & 0x0F) | ((K_MINS[j + 4] & 0x0F) << 4);
    }
    s
}

/// Q4_K: 4-bit value of element i is (i * 5 + i / 32) mod 16; chunk c of 64 elements keeps
/// its first 32 in the low nibbles of qs[32c..32c+32] and the next 32 in the high nibbles.
fn q4_k_block() -> (Vec<u8>, Vec<f32>) {
    let (d, dmin) = (0.5f32, 0.25f32);
    let v: Vec<u8> = (0..256usize)
        .map(|i| ((i * 5 + i / 32) % 16) as u8)
        .collect();
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(k_scales_pack());
    for c in 0..4 {
        b.extend((0..32).map(|l| v[64 * c + l] | (v[64 * c + 32 + l] << 4)));
    }
    let want = (0..256)
        .map(|i| {
            let s = i / 32;
            (d * K_SCALES[s] as f32) * v[i] as f32 - dmin * K_MINS[s] as f32
        })
        .collect();
    (b, want)
}

/// Q5_K: Q4_K plus a fifth bit: bit s of qh[l] for element l of sub-block s.
fn q5_k_block() -> (Vec<u8>, Vec<f32>) {
    let (d, dmin) = (0.5f32, 2.0f32);
    let v: Vec<u8> = (0..256usize)
        .map(|i| ((i * 11 + i / 32) % 32) as u8)
        .collect();
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(k_scales_pack());
    b.extend((0..32).map(|l| (0..8).map(|s| ((v[32 * s + l] >> 4) & 1) << s).sum::<u8>()));
    for c in 0..4 {
        b.extend((0..32).map(|l| (v[64 * c + l] & 0x0F) | ((v[64 * c + 32 + l] & 0x0F) << 4)));
    }
    let want = (0..256)
        .map(|i| {
            let s = i / 32;
            (d * K_SCALES[s] as f32) * v[i] as f32 - dmin * K_MINS[s] as f32
        })
        .collect();
    (b, want)
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d. In each half of 128 elements, element
/// 32k + l takes its low 4 bits from ql[64 half + l + 32 (k % 2)] (low nibble for k < 2,
/// high for k >= 2) and its top 2 bits from bits 2k..2k+1 of qh[32 half + l].
fn q6_k_block() -> (Vec<u8>, Vec<f32>) {
    let d = 0.5f32;
    let scales: Vec<i8> = (0..16).map(|i| i as i8 * 3 - 20).collect();
    let v: Vec<u8> = (0..256usize).map(|i| ((i * 13 + 7) % 64) as u8).collect();
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (i, &q) in v.iter().enumerate() {
        let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
        ql[64 * half + l + 32 * (k % 2)] |= (q & 0x0F) << if k < 2 { 0 } else { 4 };
        qh[32 * half + l] |= (q >> 4) << (2 * k);
    }
    let mut b = ql.to_vec();
    b.extend(qh);
    b.extend(scales.iter().map(|&s| s as u8));
    b.extend(h(d));
    let want = (0..256)
        .map(|i| (d * scales[i / 16] as f32) * (v[i] as f32 - 32.0))
        .collect();
    (b, want)
}

/// Q8_K: f32 scale, 256 i8 quants, 16 i16 block sums (ignored when dequantizing).
fn q8_k_block() -> (Vec<u8>, Vec<f32>) {
    let d = 0.25f32;
    let q: Vec<i8> = (0..256).map(|i: i32| (i - 128) as i8).collect();
    let mut b = d.to_le_bytes().to_vec();
    b.extend(q.iter().map(|&v| v as u8));
    b.extend([0u8; 32]);
    (b, q.iter().map(|&v| d * v as f32).collect())
}

/// Builds one block and the values it should dequantize to.
type BlockMaker = fn() -> (Vec<u8>, Vec<f32>);

/// One tensor of every supported type, with the values each should read as.
fn typed_file() -> (Vec<u8>, Vec<(&'static str, Vec<f32>)>) {
    let mut w = Writer::new();
    w.kv_str("general.architecture", "test");
    let mut expect = Vec::new();

    let f32s = [1.5f32, -2.0, 0.0, 3.25e-3, f32::MAX, -0.0];
    w.tensor_f32("f32", &[3, 2], &f32s);
    expect.push(("f32", f32s.to_vec()));

    // 1.0, -2.5, the largest f16, the smallest subnormal.
    let f16_bits = [0x3C00u16, 0xC100, 0x7BFF, 0x0001];
    let data: Vec<u8> = f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    w.tensor("f16", &[4], GgmlType::F16, &data);
    expect.push(("f16", vec![1.0, -2.5, 65504.0, 2f32.powi(-24)]));

    let bf16_bits = [0x3F80u16, 0xC020, 0x4049];
    let data: Vec<u8> = bf16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    w.tensor("bf16", &[3], GgmlType::BF16, &data);
    expect.push(("bf16", vec![1.0, -2.5, 3.140625]));

    let blocks: [(&str, GgmlType, BlockMaker); 9] = [
        ("q8_0", GgmlType::Q8_0, q8_0_block),
        ("q4_0", GgmlType::Q4_0, q4_0_block),
        ("q4_1", GgmlType::Q4_1, q4_1_block),
        ("q5_0", GgmlType::Q5_0, q5_0_block),
        ("q5_1", GgmlType::Q5_1, q5_1_block),
        ("q4_k", GgmlType::Q4_K, q4_k_block),
        ("q5_k", GgmlType::Q5_K, q5_k_block),
        ("q6_k", GgmlType::Q6_K, q6_k_block),
        ("q8_k", GgmlType::Q8_K, q8_k_block),
    ];
    for (name, ty, make) in blocks {
        let (b, want) = make();
        assert_eq!(b.len() as u64, ty.block_layout().1, "{name} block size");
        // Two rows of one block each: the second block is the first repeated.
        let n = want.len() as u64;
        let data = [b.clone(), b].concat();
        w.tensor(name, &[n, 2], ty, &data);
        expect.push((name, [want.clone(), want].concat()));
    }
    (w.finish(), expect)
}

#[test]
fn dequantizes_every_supported_type() {
    let (bytes, expect) = typed_file();
    let g = Gguf::parse(&bytes).expect("parse");
    for (name, want) in expect {
        let (shape, got) = g.tensor_f32(&bytes, name).expect(name);
        assert_eq!(
            shape.iter().product::<usize>(),
            want.len(),
            "{name} shape {shape:?}"
        );
        let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got_bits, want_bits, "{name}: got {got:?}, want {want:?}");
    }
    let (shape, _) = g.tensor_f32(&bytes, "q8_0").expect("q8_0");
    assert_eq!(shape, vec![2, 32], "PyTorch order is the reverse of ne");
}

/// A K-quant tensor takes about seven times its bytes as f32: when that memory is not there,
/// the read is an error naming the tensor, not an abort.
#[test]
fn a_tensor_there_is_no_memory_to_dequantize_is_an_error() {
    let (bytes, _) = typed_file();
    let g = Gguf::parse(&bytes).expect("parse");
    // q4_k is two rows of 256 values.
    let less = crate::buffers::budget::limit(511);
    let err = g.tensor_f32(&bytes, "q4_k").unwrap_err();
    assert_eq!(
        err,
        GgufError::NoMemory {
            name: "q4_k".into(),
            shape: vec![2, 256]
        }
    );
    assert!(
        err.to_string()
            .starts_with("not enough memory to hold q4_k as f32 (1 MiB)"),
        "{err}"
    );
    drop(less);
    assert!(g.tensor_f32(&bytes, "q4_k").is_ok());
}

#[test]
fn reads_metadata_and_layout() {
    let mut w = Writer::new();
    w.alignment = 64;
    w.kv_str("general.architecture", "llama")
        .kv_u32("general.alignment", 64)
        .kv_f32("x.eps", 1e-5)
        .kv_bool("x.flag", true)
        .kv_strs("x.list", &["a", "é", ""])
        .kv_i32s("x.ints", &[-1, 7])
        .kv_raw("x.u8", 0, &[200])
        .kv_raw("x.i64", 11, &(-5i64).to_le_bytes())
        .kv_raw("x.f64", 12, &0.5f64.to_le_bytes());
    // An array of arrays.
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend(2u64.to_le_bytes());
    for n in [1u32, 2] {
        nested.extend(4u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.extend(n.to_le_bytes());
    }
    w.kv_raw("x.nested", 9, &nested);
    w.tensor_f32("a", &[2], &[1.0, 2.0]);
    w.tensor_f32("b", &[1, 3], &[3.0, 4.0, 5.0]);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 64);
    assert_eq!(g.data_start % 64, 0);
    assert_eq!(g.architecture().expect("arch"), "llama");
    assert_eq!(g.get("x.eps"), Some(&GgufValue::F32(1e-5)));
    assert_eq!(
        g.get("x.eps").and_then(GgufValue::as_f64),
        Some(1e-5f32 as f64)
    );
    assert_eq!(g.get("x.flag"), Some(&GgufValue::Bool(true)));
    assert_eq!(
        g.get("x.list"),
        Some(&GgufValue::Array(vec![
            GgufValue::String("a".into()),
            GgufValue::String("é".into()),
            GgufValue::String(String::new()),
        ]))
    );
    assert_eq!(
        g.get("x.ints"),
        Some(&GgufValue::Array(vec![
            GgufValue::I32(-1),
            GgufValue::I32(7)
        ]))
    );
    assert_eq!(g.get("x.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(g.get("x.i64"), Some(&GgufValue::I64(-5)));
    assert_eq!(g.get("x.f64"), Some(&GgufValue::F64(0.5)));
    assert_eq!(
        g.get("x.nested"),
        Some(&GgufValue::Array(vec![
            GgufValue::Array(vec![GgufValue::U32(1)]),
            GgufValue::Array(vec![GgufValue::U32(2)]),
        ]))
    );
    assert_eq!(g.get("missing"), None);
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.tensors[1].offset, 64, "second tensor aligned to 64");
    assert_eq!(
        g.tensor_f32(&bytes, "b").expect("b"),
        (vec![3, 1], vec![3.0, 4.0, 5.0])
    );
    assert_eq!(g.chat_template(), None);

    // Version 2 has the same layout.
    w.version = 2;
    let bytes = w.finish();
    assert_eq!(Gguf::parse(&bytes).expect("v2").version, 2);
}

/// Patches the little-endian u64 following the first occurrence of `marker`.
fn patch_after(bytes: &mut [u8], marker: &[u8], value: &[u8]) {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker")
        + marker.len();
    bytes[at..at + value.len()].copy_from_slice(value);
}

fn err(bytes: &[u8]) -> GgufError {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("parsed malformed input"),
        Err(e) => e,
    }
}

#[test]
fn rejects_bad_headers() {
    assert!(matches!(err(b""), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GG"), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"GGML\x03\0\0\0"), GgufError::BadMagic { .. }));
    let mut w = Writer::new();
    w.version = 1;
    assert_eq!(err(&w.finish()), GgufError::UnsupportedVersion(1));
    w.version = 7;
    assert_eq!(err(&w.finish()), GgufError::UnsupportedVersion(7));
    w.version = 3u32.swap_bytes();
    assert!(matches!(err(&w.finish()), GgufError::BigEndian { .. }));
    assert!(matches!(err(b"GGUF\x03\0\0"), GgufError::Truncated { .. }));
    // Absurd counts fail before allocating.
    let mut bytes = Writer::new().finish();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(&bytes), GgufError::ImplausibleCount { .. }));
    let mut bytes = Writer::new().finish();
    bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(err(&bytes), GgufError::ImplausibleCount { .. }));
}

/// Byte arrays as long as the file allows would take 32 times the file in memory as values:
/// the header's arrays hold at most MAX_ARRAY_VALUES values in all, split or not.
#[test]
fn array_values_are_bounded_in_all() {
    let array = |n: u64| {
        let mut p = 0u32.to_le_bytes().to_vec(); // u8 elements
        p.extend(n.to_le_bytes());
        p.resize(p.len() + n as usize, 7);
        p
    };
    let half = MAX_ARRAY_VALUES / 2;
    let mut w = Writer::new();
    w.kv_raw("a", 9, &array(half)).kv_raw("b", 9, &array(half));
    assert!(
        Gguf::parse(&w.finish()).is_ok(),
        "the budget itself is allowed"
    );
    let mut w = Writer::new();
    w.kv_raw("a", 9, &array(half))
        .kv_raw("b", 9, &array(half + 1));
    let e = err(&w.finish());
    assert!(
        matches!(&e, GgufError::TooManyValues { what, count: 1, .. } if what.contains("\"b\"")),
        "{e}"
    );
}

#[test]
fn rejects_bad_metadata() {
    let mut w = Writer::new();
    w.kv_str("k", "value");
    let mut bytes = w.finish();
    patch_after(&mut bytes, b"k\x08\0\0\0", &(1u64 << 50).to_le_bytes());
    let e = err(&bytes);
    assert!(
        matches!(&e, GgufError::ImplausibleCount { what, .. } if what.contains("\"k\"")),
        "{e}"
    );

    let mut w = Writer::new();
    w.kv_raw("k", 13, &[0; 8]);
    assert!(matches!(
        err(&w.finish()),
        GgufError::UnknownValueType { value_type: 13, .. }
    ));

    let mut w = Writer::new();
    w.kv_raw("k", 9, &[13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        err(&w.finish()),
        GgufError::UnknownValueType { value_type: 13, .. }
    ));

    let mut w = Writer::new();
    let mut p = 4u32.to_le_bytes().to_vec();
    p.extend(u64::MAX.to_le_bytes());
    w.kv_raw("k", 9, &p);
    assert!(matches!(
        err(&w.finish()),
        GgufError::ImplausibleCount { .. }
    ));

    let mut w = Writer::new();
    w.kv_raw("k", 8, &[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]);
    assert!(matches!(err(&w.finish()), GgufError::InvalidUtf8 { .. }));

    let mut w = Writer::new();
    w.kv_u32("k", 1).kv_u32("k", 2);
    assert_eq!(err(&w.finish()), GgufError::DuplicateKey("k".into()));

    let mut w = Writer::new();
    w.kv_u32("general.alignment", 24);
    assert_eq!(err(&w.finish()), GgufError::BadAlignment(24));
    let mut w = Writer::new();
    w.kv_u32("general.alignment", 0);
    assert_eq!(err(&w.finish()), GgufError::BadAlignment(0));
    let mut w = Writer::new();
    w.kv_str("general.alignment", "32");
    assert!(matches!(err(&w.finish()), GgufError::WrongType { .. }));

    // Arrays nested past the limit.
    let mut p = Vec::new();
    for _ in 0..MAX_ARRAY_DEPTH {
        p.extend(9u32.to_le_bytes());
        p.extend(1u64.to_le_bytes());
    }
    p.extend(4u32.to_le_bytes());
    p.extend(0u64.to_le_bytes());
    let mut w = Writer::new();
    w.kv_raw("k", 9, &p);
    assert!(matches!(err(&w.finish()), GgufError::NestingTooDeep { .. }));
}

#[test]
fn rejects_bad_tensor_entries() {
    let one = |ne: &[u64], ty: GgmlType, data: &[u8]| {
        let mut w = Writer::new();
        w.tensor("t", ne, ty, data);
        w.finish()
    };
    // Unknown type id (4 was Q4_2, removed from ggml).
    let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
    patch_after(
        &mut bytes,
        b"t\x01\0\0\0\x01\0\0\0\0\0\0\0",
        &4u32.to_le_bytes(),
    );
    assert!(matches!(
        err(&bytes),
        GgufError::UnknownGgmlType { type_id: 4, .. }
    ));
    // Five dimensions.
    let bytes = one(&[1, 1, 1, 1, 1], GgmlType::F32, &[0; 4]);
    assert!(matches!(
        err(&bytes),
        GgufError::BadDimCount { n_dims: 5, .. }
    ));
    // No dimensions: a scalar, as in ggml.
    let bytes = one(&[], GgmlType::F32, &2.5f32.to_le_bytes());
    let g = Gguf::parse(&bytes).expect("scalar");
    assert_eq!(g.tensor_f32(&bytes, "t").expect("t"), (vec![], vec![2.5]));
    let bytes = one(&[], GgmlType::Q8_0, &[0; 34]);
    assert!(matches!(err(&bytes), GgufError::BadRowSize { .. }));
    // Element count overflow.
    let bytes = one(&[1 << 40, 1 << 40], GgmlType::F32, &[]);
    assert!(matches!(err(&bytes), GgufError::ShapeOverflow { .. }));
    // A row that is not whole blocks.
    let bytes = one(&[16], GgmlType::Q8_0, &[0; 34]);
    assert!(matches!(
        err(&bytes),
        GgufError::BadRowSize {
            ne0: 16,
            block: 32,
            ..
        }
    ));
    // Data past the end of the file.
    let bytes = one(&[64], GgmlType::F32, &[0; 8]);
    assert!(matches!(err(&bytes), GgufError::DataOutOfRange { .. }));
    // An offset that is not aligned, and one far out of range.
    let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
    patch_after(
        &mut bytes,
        b"t\x01\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0",
        &4u64.to_le_bytes(),
    );
    assert!(matches!(
        err(&bytes),
        GgufError::Misaligned { offset: 4, .. }
    ));
    let mut bytes = one(&[1], GgmlType::F32, &[0; 4]);
    patch_after(
        &mut bytes,
        b"t\x01\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0",
        &(u64::MAX - 31).to_le_bytes(),
    );
    assert!(matches!(err(&bytes), GgufError::DataOutOfRange { .. }));
    // Duplicate names.
    let mut w = Writer::new();
    w.tensor_f32("t", &[1], &[1.0])
        .tensor_f32("t", &[1], &[2.0]);
    assert_eq!(err(&w.finish()), GgufError::DuplicateTensor("t".into()));
}

#[test]
fn data_access_errors() {
    let mut w = Writer::new();
    w.tensor("q2k", &[256], GgmlType::Q2_K, &[0; 84]);
    w.tensor_f32("f", &[1], &[1.0]);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert!(matches!(
        g.tensor_f32(&bytes, "q2k"),
        Err(GgufError::UnsupportedType {
            ggml_type: GgmlType::Q2_K,
            ..
        })
    ));
    assert_eq!(
        g.tensor_f32(&bytes, "nope"),
        Err(GgufError::MissingTensor("nope".into()))
    );
    assert!(matches!(
        g.tensor_f32(&bytes[..bytes.len() - 1], "f"),
        Err(GgufError::BytesMismatch { .. })
    ));
    assert_eq!(
        g.tensor_bytes(&bytes, "f").expect("f"),
        &1.0f32.to_le_bytes()
    );
}

#[test]
fn every_truncation_is_an_error() {
    let (bytes, _) = typed_file();
    for len in 0..bytes.len() {
        assert!(
            Gguf::parse(&bytes[..len]).is_err(),
            "a {len}-byte prefix parsed"
        );
    }
}

#[test]
fn garbage_never_panics() {
    // Deterministic byte flips of valid files; any result is fine except a panic, and a
    // file that parses must serve all its tensors (or say why not).
    let (typed, _) = typed_file();
    let llama = tiny_llama(true);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for base in [typed, llama] {
        for _ in 0..3000 {
            let mut bytes = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            if let Ok(g) = Gguf::parse(&bytes) {
                for t in &g.tensors {
                    let _ = g.tensor_f32(&bytes, &t.name);
                }
                let _ = g.llama_hf_config();
                let _ = g.llama_hf_tensors(&bytes);
                let _ = g.hf_tokenizer_json();
            }
        }
    }
}

// ---- Llama naming, config and Q/K order ----

/// A one-layer Llama: hidden 8, 2 heads of 4, 1 KV head, FFN 4, vocab 266 (the 256
/// byte-level characters and ten more), all F32. Weight values encode their row so the
/// Q/K reordering can be checked.
fn tiny_llama(tied: bool) -> Vec<u8> {
    let mut w = Writer::new();
    let (vocab, merges, types) = tiny_vocab();
    let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.context_length", 64)
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.feed_forward_length", 4)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.attention.head_count_kv", 1)
        .kv_f32("llama.rope.freq_base", 100000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_u32("llama.rope.dimension_count", 4)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "smollm")
        .kv_strs("tokenizer.ggml.tokens", &vocab)
        .kv_i32s("tokenizer.ggml.token_type", &types)
        .kv_strs("tokenizer.ggml.merges", &merges)
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_u32("tokenizer.ggml.padding_token_id", 2)
        .kv_bool("tokenizer.ggml.add_bos_token", false)
        .kv_str("tokenizer.chat_template", "{{ messages }}");
    let rows = |n: usize, cols: usize| -> Vec<f32> {
        (0..n * cols)
            .map(|i| (i / cols) as f32 + (i % cols) as f32 / 100.0)
            .collect()
    };
    let n_vocab = vocab.len() as u64;
    w.tensor_f32("token_embd.weight", &[8, n_vocab], &rows(vocab.len(), 8));
    w.tensor_f32("blk.0.attn_norm.weight", &[8], &[1.0; 8]);
    w.tensor_f32("blk.0.attn_q.weight", &[8, 8], &rows(8, 8));
    w.tensor_f32("blk.0.attn_k.weight", &[8, 4], &rows(4, 8));
    w.tensor_f32("blk.0.attn_v.weight", &[8, 4], &rows(4, 8));
    w.tensor_f32("blk.0.attn_output.weight", &[8, 8], &rows(8, 8));
    w.tensor_f32("blk.0.ffn_gate.weight", &[8, 4], &rows(4, 8));
    w.tensor_f32("blk.0.ffn_up.weight", &[8, 4], &rows(4, 8));
    w.tensor_f32("blk.0.ffn_down.weight", &[4, 8], &rows(8, 4));
    w.tensor_f32("blk.0.ffn_norm.weight", &[8], &[2.0; 8]);
    w.tensor_f32("output_norm.weight", &[8], &[3.0; 8]);
    if !tied {
        w.tensor_f32("output.weight", &[8, n_vocab], &rows(vocab.len(), 8));
    }
    w.finish()
}

#[test]
fn llama_config() {
    let bytes = tiny_llama(true);
    let g = Gguf::parse(&bytes).expect("parse");
    let c = g.llama_hf_config().expect("config");
    let want = json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 8,
        "intermediate_size": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5f32 as f64,
        "rope_theta": 100000.0,
        "max_position_embeddings": 64,
        "vocab_size": 266,
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32",
    });
    assert_eq!(c, want);
    assert_eq!(g.chat_template(), Some("{{ messages }}"));
    let untied = tiny_llama(false);
    let g = Gguf::parse(&untied).expect("parse");
    assert_eq!(
        g.llama_hf_config().expect("config")["tie_word_embeddings"],
        json!(false)
    );
}

/// A size no model has in a GGUF's metadata is an error that names its GGUF key (not the
/// `config.json` field it would become: there is no such file), before anything is allocated
/// from it; a NaN epsilon is an error too, where JSON would have made it `null` and the config
/// its default.
#[test]
fn metadata_no_model_has_is_an_error() {
    let uint32 = 4u32.to_le_bytes();
    for (key, value, says) in [
        (
            "llama.block_count",
            u32::MAX,
            "4294967295 is larger than any model has (1024 at most)",
        ),
        (
            "llama.embedding_length",
            u32::MAX,
            "4294967295 is larger than any model has",
        ),
        (
            "llama.context_length",
            u32::MAX,
            "4294967295 is larger than any model has",
        ),
        ("llama.block_count", 0, "is 0; it must be positive"),
        ("llama.attention.head_count", 0, "is 0; it must be positive"),
    ] {
        let mut bytes = tiny_llama(true);
        let marker = [key.as_bytes(), &uint32].concat();
        patch_after(&mut bytes, &marker, &value.to_le_bytes());
        let err = folder::text_model_files(GgufFile::parse(bytes).expect("parse"))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&format!("metadata key {key:?}: {says}")),
            "{key}: {err}"
        );
    }
    let mut bytes = tiny_llama(true);
    let marker = [
        b"llama.attention.layer_norm_rms_epsilon".as_slice(),
        &6u32.to_le_bytes(),
    ]
    .concat();
    patch_after(&mut bytes, &marker, &f32::NAN.to_le_bytes());
    let err = Gguf::parse(&bytes)
        .expect("parse")
        .llama_hf_config()
        .expect_err("a NaN epsilon")
        .to_string();
    assert!(
        err.contains("is NaN, where a finite number belongs"),
        "{err}"
    );
}

#[test]
fn llama_tensors_renamed_and_unpermuted() {
    let bytes = tiny_llama(false);
    let g = Gguf::parse(&bytes).expect("parse");
    let tensors = g.llama_hf_tensors(&bytes).expect("tensors");
    let names: Vec<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.norm.weight",
            "lm_head.weight",
        ]
    );
    let get = |name: &str| {
        let (_, shape, values) = tensors.iter().find(|(n, _, _)| n == name).expect(name);
        (shape.clone(), values.clone())
    };
    let row_ids = |values: &[f32], cols: usize| -> Vec<usize> {
        values.chunks(cols).map(|r| r[0] as usize).collect()
    };
    // Heads of 4 rows: the file's rows (0, 1, 2, 3) hold HF's (0, 2, 1, 3).
    let (shape, q) = get("model.layers.0.self_attn.q_proj.weight");
    assert_eq!(shape, vec![8, 8]);
    assert_eq!(row_ids(&q, 8), [0, 2, 1, 3, 4, 6, 5, 7]);
    let (shape, k) = get("model.layers.0.self_attn.k_proj.weight");
    assert_eq!(shape, vec![4, 8]);
    assert_eq!(row_ids(&k, 8), [0, 2, 1, 3]);
    // Columns travel with their row.
    assert_eq!(&q[8..16], &[2.0, 2.01, 2.02, 2.03, 2.04, 2.05, 2.06, 2.07]);
    let (_, v) = get("model.layers.0.self_attn.v_proj.weight");
    assert_eq!(row_ids(&v, 8), [0, 1, 2, 3]);
    let (shape, down) = get("model.layers.0.mlp.down_proj.weight");
    assert_eq!(shape, vec![8, 4]);
    assert_eq!(row_ids(&down, 4), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(get("model.embed_tokens.weight").0, vec![266, 8]);

    // One at a time gives the same.
    let names = g.llama_hf_names().expect("names");
    assert_eq!(names.len(), tensors.len());
    for ((gguf_name, hf_name), whole) in names.iter().zip(&tensors) {
        let one = g.llama_hf_tensor(&bytes, gguf_name).expect("one tensor");
        assert_eq!(&one, whole);
        assert_eq!(hf_name, &whole.0);
    }
    // Head counts that do not fit the rows are errors, not panics.
    assert!(unpermute_rope_rows(vec![0.0; 6], &[3, 2], 1).is_err());
    assert!(unpermute_rope_rows::<f32>(vec![], &[0], usize::MAX).is_err());
    assert!(unpermute_rope_rows::<f32>(vec![], &[0], 0).is_err());
}

/// Rows move whole within each head, in place: llama.cpp interleaves a head's two halves
/// (its row 2d + j is Hugging Face's row j * head_dim/2 + d), and the two moves undo each other.
#[test]
fn rope_rows_move_within_each_head() {
    // Two heads of four rows, two columns: row r holds [r, 10 + r] in llama.cpp's order.
    let llama_cpp: Vec<f32> = (0..8).flat_map(|r| [r as f32, 10.0 + r as f32]).collect();
    let hf = unpermute_rope_rows(llama_cpp.clone(), &[8, 2], 2).unwrap();
    let rows: Vec<f32> = hf.iter().step_by(2).copied().collect();
    assert_eq!(rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    assert_eq!(hf[1], 10.0);
    assert_eq!(permute_rope_rows(hf, 8, 2), llama_cpp);
}

#[test]
fn packed_llama_tensors_stay_blocks() {
    use crate::weights::gguf::write::{quantize_q4_0, quantize_q8_0};
    let values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 300.0)
            .collect()
    };
    let (q, k) = (values(32 * 32), values(16 * 32));
    let mut w = Writer::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.attention.head_count_kv", 1);
    w.tensor(
        "blk.0.attn_q.weight",
        &[32, 32],
        GgmlType::Q8_0,
        &quantize_q8_0(&q),
    );
    w.tensor(
        "blk.0.attn_k.weight",
        &[32, 16],
        GgmlType::Q4_0,
        &quantize_q4_0(&k),
    );
    let q4_1: Vec<u8> = q4_1_block().0.repeat(8);
    w.tensor("blk.0.ffn_up.weight", &[32, 8], GgmlType::Q4_1, &q4_1);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    for (name, ty) in [
        ("blk.0.attn_q.weight", Some(QuantType::Q8_0)),
        ("blk.0.attn_k.weight", Some(QuantType::Q4_0)),
        ("blk.0.ffn_up.weight", None),
    ] {
        let (hf, stored) = g.llama_hf_stored(&bytes, name).expect("stored");
        let (hf_f32, shape, f32s) = g.llama_hf_tensor(&bytes, name).expect("f32");
        assert_eq!(hf, hf_f32);
        match (stored, ty) {
            (StoredTensor::Blocks(b), Some(ty)) => {
                assert_eq!(b.ty(), ty);
                assert_eq!(vec![b.rows(), b.cols()], shape);
                // The packed rows are the unpermuted f32 rows, bit for bit.
                assert_eq!(b.dequantize(), f32s, "{name}");
            }
            (StoredTensor::Dequantized(t), None) => assert_eq!(t.data, f32s),
            (other, _) => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn llama_unknown_tensors_are_named() {
    let mut w = Writer::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.attention.head_count", 1);
    w.tensor_f32("blk.0.attn_norm.weight", &[2], &[1.0, 1.0]);
    w.tensor_f32("blk.1.attn_norm.weight", &[2], &[1.0, 1.0]);
    w.tensor_f32("rope_freqs.weight", &[2], &[1.0, 1.0]);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert_eq!(
        g.llama_hf_tensors(&bytes),
        Err(GgufError::UnknownTensors {
            architecture: "llama".into(),
            names: vec!["blk.1.attn_norm.weight".into(), "rope_freqs.weight".into()],
        })
    );
    let mut w = Writer::new();
    w.kv_str("general.architecture", "qwen2");
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert!(matches!(
        g.llama_hf_config(),
        Err(GgufError::Unsupported(_))
    ));
    assert!(matches!(
        g.llama_hf_tensors(&bytes),
        Err(GgufError::Unsupported(_))
    ));
}

// ---- tokenizer ----

/// Tokens: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (control), then the 256 byte-level
/// characters, then merged tokens "Ġt", "he", "Ġthe", "ll", "hell", `<think>` (user
/// defined) and a control token outside the byte alphabet (skipped by transformers).
fn tiny_vocab() -> (Vec<String>, Vec<&'static str>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![3, 3, 3];
    tokens.extend(
        tokenizer::byte_level_alphabet()
            .iter()
            .map(|c| c.to_string()),
    );
    types.extend([1; 256]);
    for t in ["Ġt", "he", "Ġthe", "ll", "hell"] {
        tokens.push(t.to_string());
        types.push(1);
    }
    tokens.push("<think>".into());
    types.push(4);
    tokens.push("<｜pad｜>".into());
    types.push(3);
    let merges = vec!["Ġ t", "h e", "Ġt he", "l l", "he ll"];
    (tokens, merges, types)
}

#[test]
fn tokenizer_json_matches_transformers_construction() {
    let bytes = tiny_llama(true);
    let g = Gguf::parse(&bytes).expect("parse");
    let j = g.hf_tokenizer_json().expect("tokenizer json");
    let added: Vec<(u64, &str, bool)> = j["added_tokens"]
        .as_array()
        .expect("added")
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().expect("id"),
                t["content"].as_str().expect("content"),
                t["special"].as_bool().expect("special"),
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            (0, "<|endoftext|>", true),
            (1, "<|im_start|>", true),
            (2, "<|im_end|>", true),
            (264, "<think>", false),
        ]
    );
    assert_eq!(j["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(j["pre_tokenizer"]["use_regex"], true);
    assert_eq!(j["decoder"]["type"], "ByteLevel");
    assert_eq!(j["post_processor"]["special_tokens"], json!({}));
    // The non-alphabet token is in the vocabulary, re-spelled byte by byte.
    let respelled: String = "<｜pad｜>"
        .bytes()
        .map(|b| tokenizer::byte_level_alphabet()[b as usize])
        .collect();
    assert_eq!(j["model"]["vocab"][respelled.as_str()], 265);

    let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizers accepts it");
    let text = "<|im_start|>hello the<think><|im_end|>";
    let enc = tok.encode(text, true).expect("encode");
    let id = |s: &str| j["model"]["vocab"][s].as_u64().expect(s) as u32;
    assert_eq!(
        enc.get_ids(),
        [1, id("hell"), id("o"), id("Ġthe"), 264, 2],
        "{:?}",
        enc.get_tokens()
    );
    assert_eq!(
        tok.decode(enc.get_ids(), true).expect("decode"),
        "hello the<think>"
    );
    assert_eq!(tok.decode(enc.get_ids(), false).expect("decode"), text);
}

#[test]
fn tokenizer_variants() {
    // No <|endoftext|> in the vocabulary: transformers appends it; add_bos puts bos first;
    // a llama3-style `pre` brings its split regex.
    let mut w = Writer::new();
    let alphabet: Vec<String> = tokenizer::byte_level_alphabet()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut tokens: Vec<&str> = vec!["<s>"];
    tokens.extend(alphabet.iter().map(String::as_str));
    w.kv_str("general.architecture", "llama")
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "llama-bpe")
        .kv_strs("tokenizer.ggml.tokens", &tokens)
        .kv_strs("tokenizer.ggml.merges", &[])
        .kv_u32("tokenizer.ggml.bos_token_id", 0)
        .kv_bool("tokenizer.ggml.add_bos_token", true);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    let j = g.hf_tokenizer_json().expect("json");
    let added: Vec<(u64, &str)> = j["added_tokens"]
        .as_array()
        .expect("added")
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().expect("id"),
                t["content"].as_str().expect("c"),
            )
        })
        .collect();
    assert_eq!(added, [(0, "<s>"), (257, "<|endoftext|>")]);
    assert_eq!(j["pre_tokenizer"]["type"], "Sequence");
    assert_eq!(
        j["post_processor"]["special_tokens"]["<s>"]["ids"],
        json!([0])
    );
    let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizers");
    let enc = tok.encode("hi 123", true).expect("encode");
    assert_eq!(enc.get_ids()[0], 0, "bos first");
    assert_eq!(enc.get_ids().len(), 1 + 6);

    // Other tokenizer models and bad ids are errors.
    let mut w = Writer::new();
    w.kv_str("tokenizer.ggml.model", "llama")
        .kv_strs("tokenizer.ggml.tokens", &["a"]);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert!(matches!(
        g.hf_tokenizer_json(),
        Err(GgufError::Unsupported(_))
    ));
    let mut w = Writer::new();
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_strs("tokenizer.ggml.tokens", &["a", "b"])
        .kv_strs("tokenizer.ggml.merges", &["a c"]);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert!(matches!(
        g.hf_tokenizer_json(),
        Err(GgufError::BadValue { .. })
    ));
    let mut w = Writer::new();
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_strs("tokenizer.ggml.tokens", &["a"])
        .kv_strs("tokenizer.ggml.merges", &[])
        .kv_u32("tokenizer.ggml.eos_token_id", 5);
    let bytes = w.finish();
    let g = Gguf::parse(&bytes).expect("parse");
    assert!(matches!(
        g.hf_tokenizer_json(),
        Err(GgufError::BadValue { .. })
    ));
}

/// Developer export for `tools/check_gguf.py` (not a unit test): with GGUF_CHECK_FILE and
/// GGUF_CHECK_OUT set, writes every tensor dequantized (raw/), the Hugging Face view of a
/// llama file (hf/, config.json, tokenizer.json) and, given GGUF_CHECK_TEXTS (a JSON list
/// of strings), their encodings by the `tokenizers` crate.
#[test]
#[ignore = "developer export, run by tools/check_gguf.py"]
fn export_for_python_check() {
    use std::fs;
    use std::path::Path;
    let (Ok(file), Ok(out)) = (
        std::env::var("GGUF_CHECK_FILE"),
        std::env::var("GGUF_CHECK_OUT"),
    ) else {
        eprintln!("GGUF_CHECK_FILE / GGUF_CHECK_OUT not set; nothing exported");
        return;
    };
    let out = Path::new(&out);
    let bytes = fs::read(&file).expect("read GGUF_CHECK_FILE");
    let g = Gguf::parse(&bytes).expect("parse");

    let write_set = |dir: &str, tensors: Vec<HfTensor>| {
        let dir = out.join(dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let mut index = Vec::new();
        for (i, (name, shape, values)) in tensors.into_iter().enumerate() {
            let path = format!("{i}.f32");
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            fs::write(dir.join(&path), raw).expect("write tensor");
            index.push(json!({"name": name, "shape": shape, "file": path}));
        }
        fs::write(dir.join("index.json"), Value::Array(index).to_string()).expect("index");
    };

    let raw: Vec<_> = g
        .tensors
        .iter()
        .filter(|t| t.ggml_type.is_supported())
        .map(|t| {
            let (shape, values) = g.tensor_f32(&bytes, &t.name).expect("tensor");
            (t.name.clone(), shape, values)
        })
        .collect();
    write_set("raw", raw);

    if g.architecture().ok() == Some("llama") && !g.tensors.is_empty() {
        let config = g.llama_hf_config().expect("config");
        fs::write(out.join("config.json"), config.to_string()).expect("config");
        write_set("hf", g.llama_hf_tensors(&bytes).expect("hf tensors"));
    }
    if let Some(t) = g.chat_template() {
        fs::write(out.join("chat_template.jinja"), t).expect("template");
    }
    if g.get("tokenizer.ggml.model").is_some() {
        let j = g.hf_tokenizer_json().expect("tokenizer json");
        fs::write(out.join("tokenizer.json"), j.to_string()).expect("tokenizer");
        if let Ok(texts) = std::env::var("GGUF_CHECK_TEXTS") {
            let texts: Vec<String> =
                serde_json::from_str(&fs::read_to_string(texts).expect("texts")).expect("list");
            let tok = tokenizers::Tokenizer::from_bytes(j.to_string()).expect("tokenizer");
            let results: Vec<Value> = texts
                .iter()
                .map(|text| {
                    let enc = tok.encode(text.as_str(), true).expect("encode");
                    let ids = enc.get_ids().to_vec();
                    let decoded = tok.decode(&ids, true).expect("decode");
                    let decoded_all = tok.decode(&ids, false).expect("decode");
                    json!({"ids": ids, "decoded": decoded, "decoded_with_special": decoded_all})
                })
                .collect();
            fs::write(
                out.join("encodings.json"),
                Value::Array(results).to_string(),
            )
            .expect("encodings");
        }
    }
}
