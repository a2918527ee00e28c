use std::io::Write;

use fd_eval::idx::{load_fmnist, read_idx};

fn gz(path: &std::path::Path, bytes: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

#[test]
fn reads_fashion_mnist_test_split() {
    let (images, labels) = load_fmnist("test").unwrap();
    assert_eq!(images.dims, vec![10000, 28, 28]);
    assert_eq!(labels.len(), 10000);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
}

#[test]
fn truncated_wrong_magic_and_missing_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t-idx3-ubyte.gz");
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    b.extend([0u8; 7]);
    gz(&p, &b);
    let e = read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("t-idx3-ubyte.gz") && e.contains("expected 8 data bytes"), "{e}");
    gz(&p, &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0]);
    let e = read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("not an unsigned-byte IDX"), "{e}");
    std::fs::write(&p, b"not gzip at all").unwrap();
    let e = read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("corrupt gzip"), "{e}");
    let e = read_idx(&d.path().join("missing.gz")).unwrap_err().to_string();
    assert!(e.contains("missing.gz") && e.contains("dataset-fashion-mnist"), "{e}");
}
