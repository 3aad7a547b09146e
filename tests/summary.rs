//! TensorBoard event files, read back through a decoder written here from
//! the formats' definitions (TFRecord framing with masked CRC32C computed
//! bit by bit, protobuf wire format, TensorFlow's field numbers),
//! independent of the writer's code and its prost messages.

mod common;
use common::TempDir;
use std::path::PathBuf;
use wgflow::io::summary::{create_file_writer, proto};
use wgflow::{Device, Error, Tensor};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let lcrc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap());
        assert_eq!(lcrc, masked(len_bytes), "length CRC");
        let data = &bytes[i + 12..i + 12 + len];
        let dcrc = u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().unwrap());
        assert_eq!(dcrc, masked(data), "data CRC");
        out.push(data.to_vec());
        i += 16 + len;
    }
    out
}

#[derive(Debug, Clone)]
enum F {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(Vec<u8>),
}

fn fields(mut b: &[u8]) -> Vec<(u32, F)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let f = match wire {
            0 => F::Varint(varint(&mut b)),
            1 => {
                let v = b[..8].try_into().unwrap();
                b = &b[8..];
                F::Fixed64(v)
            }
            5 => {
                let v = b[..4].try_into().unwrap();
                b = &b[4..];
                F::Fixed32(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = b[..n].to_vec();
                b = &b[n..];
                F::Bytes(v)
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((field, f));
    }
    out
}

fn get(fs: &[(u32, F)], n: u32) -> Option<F> {
    fs.iter().find(|(f, _)| *f == n).map(|(_, v)| v.clone())
}
fn bytes(f: Option<F>) -> Vec<u8> {
    match f {
        Some(F::Bytes(b)) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}
/// A double field; an absent one is 0.0 (proto3 leaves default values out).
fn double(f: Option<F>) -> f64 {
    match f {
        Some(F::Fixed64(b)) => f64::from_le_bytes(b),
        None => 0.0,
        other => panic!("expected a double, got {other:?}"),
    }
}

/// (tag, step, value fields) of every summary event after the version event.
fn events(path: &PathBuf) -> Vec<(String, i64, Vec<(u32, F)>)> {
    let recs = records(&std::fs::read(path).unwrap());
    let first = fields(&recs[0]);
    assert_eq!(bytes(get(&first, 3)), b"brain.Event:2");
    assert!(double(get(&first, 1)) > 1.5e9, "wall time");
    recs[1..]
        .iter()
        .map(|r| {
            let ev = fields(r);
            let step = match get(&ev, 2) {
                Some(F::Varint(v)) => v as i64,
                None => 0,
                o => panic!("{o:?}"),
            };
            let summary = fields(&bytes(get(&ev, 5)));
            let value = fields(&bytes(get(&summary, 1)));
            let tag = String::from_utf8(bytes(get(&value, 1))).unwrap();
            (tag, step, value)
        })
        .collect()
}

#[test]
fn scalars_histograms_and_images_decode() {
    let dir = TempDir::new("tb");
    let mut w = create_file_writer(&dir).unwrap();
    for step in 0..3 {
        w.scalar("loss", 1.0 / (step as f64 + 1.0), step).unwrap();
    }
    let data = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 2.0, 5.0], &[5], &Device::Cpu).unwrap();
    w.histogram("weights", &data, 7, 5).unwrap();
    let img = Tensor::from_vec(
        (0..12).map(|i| i as f32 / 11.0).collect::<Vec<_>>(),
        &[1, 3, 4, 1],
        &Device::Cpu,
    )
    .unwrap();
    w.image("digits", &img, 9).unwrap();
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("events.out.tfevents.")
    );
    let ev = events(&path);
    assert_eq!(ev.len(), 5);
    for (i, (tag, step, value)) in ev[..3].iter().enumerate() {
        assert_eq!(tag, "loss");
        assert_eq!(*step, i as i64);
        match get(value, 2) {
            Some(F::Fixed32(b)) => assert_eq!(f32::from_le_bytes(b), 1.0 / (i as f32 + 1.0)),
            o => panic!("simple_value missing: {o:?}"),
        }
    }
    let (tag, step, value) = &ev[3];
    assert_eq!((tag.as_str(), *step), ("weights", 7));
    let h = fields(&bytes(get(value, 5)));
    assert_eq!(
        (double(get(&h, 1)), double(get(&h, 2)), double(get(&h, 3))),
        (0.0, 5.0, 5.0)
    );
    assert_eq!(double(get(&h, 4)), 9.0);
    assert_eq!(double(get(&h, 5)), 31.0);
    let counts: Vec<f64> = bytes(get(&h, 7))
        .chunks(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(counts, vec![1.0, 2.0, 1.0, 0.0, 1.0]);
    let (tag, step, value) = &ev[4];
    assert_eq!((tag.as_str(), *step), ("digits/image", 9));
    let im = fields(&bytes(get(value, 4)));
    assert!(matches!(get(&im, 1), Some(F::Varint(3))));
    assert!(matches!(get(&im, 2), Some(F::Varint(4))));
    assert!(matches!(get(&im, 3), Some(F::Varint(1))));
    let png = bytes(get(&im, 4));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 4, "width");
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 3, "height");
}

#[test]
fn bad_image_shapes_are_errors() {
    let dir = TempDir::new("tb-bad");
    let mut w = create_file_writer(&dir).unwrap();
    let t = Tensor::from_vec(vec![0.0f32; 6], &[2, 3], &Device::Cpu).unwrap();
    assert!(w.image("x", &t, 0).is_err());
}

#[test]
fn empty_images_are_shape_errors_naming_the_op() {
    let dir = TempDir::new("tb-empty");
    let mut w = create_file_writer(&dir).unwrap();
    for shape in [[1, 3, 0, 1], [1, 0, 4, 3], [2, 0, 0, 4]] {
        let t = Tensor::from_vec(Vec::<f32>::new(), &shape, &Device::Cpu).unwrap();
        match w.image("empty", &t, 0) {
            Err(Error::Shape { op, shapes, msg }) => {
                assert_eq!(op, "summary.image");
                assert_eq!(shapes, vec![shape.to_vec()]);
                assert!(msg.contains("height and width"), "{msg}");
            }
            other => panic!("{shape:?}: expected a shape error, got {other:?}"),
        }
    }
    // The writer is still usable and wrote nothing for them.
    w.scalar("after", 0.0, 1).unwrap();
    w.flush().unwrap();
    let ev = events(&w.path().to_path_buf());
    assert_eq!(ev.len(), 1);
    let (tag, step, value) = &ev[0];
    assert_eq!((tag.as_str(), *step), ("after", 1));
    // A scalar 0.0 is still written (simple_value is a oneof member).
    assert!(matches!(get(value, 2), Some(F::Fixed32(b)) if f32::from_le_bytes(b) == 0.0));
}

#[test]
fn two_writers_in_one_dir_keep_their_own_files() {
    use prost::Message;
    let dir = TempDir::new("tb-two");
    let mut a = create_file_writer(&dir).unwrap();
    let mut b = create_file_writer(&dir).unwrap();
    assert_ne!(a.path(), b.path());
    a.scalar("a", 1.0, 1).unwrap();
    b.scalar("b", 2.0, 2).unwrap();
    a.flush().unwrap();
    b.flush().unwrap();
    drop((a, b));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut tags = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        // events.out.tfevents.<seconds>.<host>.<pid>.<n>.v2
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(".v2"),
            "{name}"
        );
        assert!(name.contains(&format!(".{}.", std::process::id())), "{name}");
        // Decoded with the writer's own prost messages too.
        let recs = records(&std::fs::read(f).unwrap());
        assert_eq!(recs.len(), 2, "{name}");
        let first = proto::Event::decode(&recs[0][..]).unwrap();
        assert_eq!(
            first.what,
            Some(proto::event::What::FileVersion("brain.Event:2".into()))
        );
        let ev = proto::Event::decode(&recs[1][..]).unwrap();
        let Some(proto::event::What::Summary(s)) = ev.what else {
            panic!("{name}: no summary")
        };
        tags.push((s.value[0].tag.clone(), ev.step, s.value[0].value.clone()));
    }
    tags.sort_by(|x, y| x.0.cmp(&y.0));
    use proto::summary::value::Value;
    assert_eq!(
        tags,
        vec![
            ("a".to_string(), 1, Some(Value::SimpleValue(1.0))),
            ("b".to_string(), 2, Some(Value::SimpleValue(2.0))),
        ]
    );
}

#[test]
fn io_errors_keep_the_os_error_as_their_source() {
    let dir = TempDir::new("tb-io");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = match create_file_writer(file.join("logs")) {
        Err(e) => e,
        Ok(_) => panic!("a log dir under a file must fail"),
    };
    assert!(
        matches!(&err, Error::Io { path, .. } if path.contains("not-a-dir")),
        "{err}"
    );
    let source = std::error::Error::source(&err).expect("an io error as source");
    assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
}

/// A histogram with an absurd bucket count is a typed error, not an
/// allocation that aborts the process.
#[test]
fn a_histogram_with_too_many_buckets_is_an_error() {
    let d = TempDir::new("summary-buckets");
    let mut w = create_file_writer(&d).unwrap();
    let t = wgflow::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &wgflow::Device::Cpu).unwrap();
    match w.histogram("h", &t, 0, usize::MAX) {
        Err(wgflow::Error::InvalidArgument { op, .. }) => assert_eq!(op, "summary.histogram"),
        other => panic!("{other:?}"),
    }
    w.histogram("h", &t, 0, 30).unwrap();
}
