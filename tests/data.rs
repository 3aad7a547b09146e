//! tf.data: order, seeds, remainders, repeat/take, map, prefetch; MNIST IDX
//! (raw and gzip) and CSV readers with their malformed-file errors.

mod common;
use common::TempDir;
use wgflow::data::{Dataset, csv, mnist, synthetic};
use wgflow::{Device, Error, Tensor};

fn range_ds(n: usize) -> Dataset {
    let x = Tensor::from_vec((0..n as i32).collect::<Vec<_>>(), &[n], &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..n).map(|i| i as f32 * 10.0).collect::<Vec<_>>(), &[n], &Device::Cpu).unwrap();
    Dataset::from_tensor_slices(&[x, y]).unwrap()
}

fn firsts(ds: &Dataset) -> Vec<i32> {
    ds.iter()
        .unwrap()
        .flat_map(|e| e.unwrap()[0].to_vec::<i32>().unwrap())
        .collect()
}

fn tmp(name: &str) -> TempDir {
    TempDir::new(&format!("data-{name}"))
}

#[test]
fn slices_keep_order_and_pairs() {
    let ds = range_ds(5);
    assert_eq!(ds.cardinality(), Some(5));
    let e: Vec<Vec<Tensor>> = ds.iter().unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(e.len(), 5);
    for (i, el) in e.iter().enumerate() {
        assert_eq!(el[0].shape(), &[] as &[usize]);
        assert_eq!(el[0].item().unwrap(), i as f64);
        assert_eq!(el[1].item().unwrap(), i as f64 * 10.0);
    }
    // Rows of a matrix come out as vectors.
    let m = Tensor::from_vec((0..6).map(|v| v as f32).collect::<Vec<_>>(), &[3, 2], &Device::Cpu).unwrap();
    let rows: Vec<Vec<f32>> = Dataset::from_tensor_slices(&[m])
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap()[0].to_vec::<f32>().unwrap())
        .collect();
    assert_eq!(rows, vec![vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0, 5.0]]);
}

#[test]
fn mismatched_lengths_are_an_error() {
    let a = Tensor::from_vec(vec![1.0f32; 4], &[4], &Device::Cpu).unwrap();
    let b = Tensor::from_vec(vec![1.0f32; 3], &[3], &Device::Cpu).unwrap();
    match Dataset::from_tensor_slices(&[a, b]) {
        Err(Error::Shape {
            op: "from_tensor_slices",
            msg,
            ..
        }) => assert!(msg.contains("4") && msg.contains("3")),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("should fail"),
    }
}

#[test]
fn shuffle_is_a_seeded_permutation_that_changes_each_epoch() {
    let ds = range_ds(50).shuffle(50, 7);
    let e1 = firsts(&ds);
    let e2 = firsts(&ds);
    let mut sorted = e1.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(e1, (0..50).collect::<Vec<_>>(), "not shuffled");
    assert_ne!(e1, e2, "each epoch gets a new order");
    // The same seed gives the same sequence of orders.
    let again = range_ds(50).shuffle(50, 7);
    assert_eq!(firsts(&again), e1);
    assert_eq!(firsts(&again), e2);
    assert_ne!(firsts(&range_ds(50).shuffle(50, 8)), e1);
    // A small buffer only shuffles locally: element i appears within buffer of position i.
    let local = firsts(&range_ds(50).shuffle(3, 1));
    for (pos, &v) in local.iter().enumerate() {
        assert!(v as usize <= pos + 2, "{v} came out at {pos}");
    }
}

#[test]
fn batch_stacks_and_handles_remainders() {
    let b: Vec<Vec<Tensor>> = range_ds(7)
        .batch(3, false)
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0][0].to_vec::<i32>().unwrap(), vec![0, 1, 2]);
    assert_eq!(b[2][0].to_vec::<i32>().unwrap(), vec![6]);
    assert_eq!(b[1][1].to_vec::<f32>().unwrap(), vec![30.0, 40.0, 50.0]);
    assert_eq!(range_ds(7).batch(3, false).unwrap().cardinality(), Some(3));
    let d = range_ds(7).batch(3, true).unwrap();
    assert_eq!(d.cardinality(), Some(2));
    assert_eq!(firsts(&d), vec![0, 1, 2, 3, 4, 5]);
    assert!(range_ds(7).batch(0, false).is_err());
}

#[test]
fn repeat_take_map() {
    assert_eq!(firsts(&range_ds(3).repeat(Some(2))), vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(firsts(&range_ds(3).repeat(None).take(7)), vec![0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(range_ds(3).repeat(Some(2)).cardinality(), Some(6));
    assert_eq!(range_ds(10).take(4).cardinality(), Some(4));
    // An empty dataset repeated forever is empty, not a hang.
    assert_eq!(firsts(&range_ds(0).repeat(None)), Vec::<i32>::new());
    let doubled = range_ds(4).map(|e| Ok(vec![e[0].add(&e[0])?, e[1].clone()]));
    assert_eq!(firsts(&doubled), vec![0, 2, 4, 6]);
    let failing = range_ds(4).map(|e| {
        if e[0].item()? == 2.0 {
            Err(Error::InvalidArgument {
                op: "map",
                msg: "boom".into(),
            })
        } else {
            Ok(e)
        }
    });
    let r: Vec<_> = failing.iter().unwrap().collect();
    assert!(r[2].is_err());
}

#[test]
fn prefetch_yields_the_same_elements() {
    let ds = range_ds(40).shuffle(40, 3).batch(6, false).unwrap();
    let plain: Vec<i32> = firsts(&ds);
    let ds2 = range_ds(40).shuffle(40, 3).batch(6, false).unwrap().prefetch(2);
    assert_eq!(firsts(&ds2), plain);
    // Stopping early leaves no stuck thread behind (the iterator is dropped).
    let mut it = range_ds(1000).prefetch(1).iter().unwrap();
    it.next();
    drop(it);
}

#[test]
fn mnist_idx_round_trip_raw_and_gzip() {
    let dir = tmp("mnist");
    let (x, y) = synthetic::digits(20, 5).unwrap();
    let px: Vec<u8> = x
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<u8> = y.to_vec::<i32>().unwrap().iter().map(|&v| v as u8).collect();
    for (gz, suffix) in [(false, ""), (true, ".gz")] {
        let d = dir.join(if gz { "gz" } else { "raw" });
        std::fs::create_dir_all(&d).unwrap();
        for (stem, n) in [("train", 20usize), ("t10k", 20)] {
            mnist::write_idx(
                &d.join(format!("{stem}-images-idx3-ubyte{suffix}")),
                &[n, 28, 28],
                &px,
                gz,
            )
            .unwrap();
            mnist::write_idx(&d.join(format!("{stem}-labels-idx1-ubyte{suffix}")), &[n], &labels, gz).unwrap();
        }
        let (tx, ty, vx, vy) = mnist::load(&d).unwrap();
        assert_eq!(tx.shape(), &[20, 28, 28, 1]);
        assert_eq!(ty.to_vec::<i32>().unwrap(), y.to_vec::<i32>().unwrap());
        assert_eq!(vx.shape(), &[20, 28, 28, 1]);
        assert_eq!(vy.shape(), &[20]);
        let back: Vec<u8> = tx
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        assert_eq!(back, px);
    }
}

#[test]
fn malformed_mnist_files_name_the_file_and_the_problem() {
    let dir = tmp("bad");
    let images = dir.join("imgs");
    let labels = dir.join("labels");
    mnist::write_idx(&labels, &[2], &[1, 2], false).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "magic"),
        (
            vec![0, 0, 0x0d, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            "unsigned bytes",
        ),
        (vec![0, 0, 8, 3, 0, 0, 0, 2], "truncated IDX header"),
        (vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 9, 9], "holds 2"),
        (vec![0x1f, 0x8b, 1, 2, 3], "gzip"),
    ];
    for (bytes, want) in cases {
        std::fs::write(&images, &bytes).unwrap();
        match mnist::read_pair(&images, &labels) {
            Err(Error::Io { path, msg, .. }) => {
                assert!(path.ends_with("imgs"), "{path}");
                assert!(msg.contains(want), "{msg} (wanted {want})");
            }
            other => panic!("expected an Io error for {want}, got {:?}", other.map(|_| ())),
        }
    }
    // Labels that disagree with the images.
    mnist::write_idx(&images, &[3, 2, 2], &[0; 12], false).unwrap();
    assert!(matches!(mnist::read_pair(&images, &labels), Err(Error::Io { path, .. }) if path.ends_with("labels")));
    mnist::write_idx(&images, &[2, 2, 2], &[0; 8], false).unwrap();
    mnist::write_idx(&labels, &[2], &[1, 12], false).unwrap();
    assert!(
        mnist::read_pair(&images, &labels)
            .unwrap_err()
            .to_string()
            .contains("not a digit")
    );
    assert!(
        mnist::load(&dir.join("nowhere"))
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
}

#[test]
fn csv_reader() {
    let dir = tmp("csv");
    let p = dir.join("a.csv");
    std::fs::write(&p, "x,y\n1,2\n3.5, -4\n\n5,6e1\n").unwrap();
    let (names, t) = csv::read_csv(&p, true).unwrap();
    assert_eq!(names, vec!["x", "y"]);
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.5, -4.0, 5.0, 60.0]);
    std::fs::write(&p, "1,2\n3,4\n").unwrap();
    let (names, t) = csv::read_csv(&p, false).unwrap();
    assert_eq!(names, vec!["c0", "c1"]);
    assert_eq!(t.shape(), &[2, 2]);
    std::fs::write(&p, "x,y\n1,2\n3\n").unwrap();
    let e = csv::read_csv(&p, true).unwrap_err().to_string();
    assert!(
        e.contains("a.csv") && e.contains("line 3") && e.contains("1 fields"),
        "{e}"
    );
    std::fs::write(&p, "x,y\n1,two\n").unwrap();
    let e = csv::read_csv(&p, true).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("two"), "{e}");
    assert!(csv::read_csv(&dir.join("missing.csv"), true).is_err());
}

#[test]
fn synthetic_digits_are_deterministic_and_balanced() {
    let (a, la) = synthetic::digits(200, 9).unwrap();
    let (b, lb) = synthetic::digits(200, 9).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_eq!(la.to_vec::<i32>().unwrap(), lb.to_vec::<i32>().unwrap());
    let v = a.to_vec::<f32>().unwrap();
    assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let mut counts = [0; 10];
    for l in la.to_vec::<i32>().unwrap() {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c >= 8), "{counts:?}");
}
