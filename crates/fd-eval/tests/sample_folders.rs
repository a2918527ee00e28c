//! Sample-folder loading: PNG folders, mixed sizes, unreadable files, empty folders.

use fd_eval::images::{load_sample_folder, save_png, to_u8};
use tch::{Device, Kind, Tensor};

fn write(dir: &std::path::Path, name: &str, h: i64, w: i64) {
    let img = Tensor::rand([1, 1, h, w], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    save_png(&to_u8(&img).get(0), &dir.join(name)).unwrap();
}

#[test]
fn png_folder_roundtrip_and_errors() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "000000.png", 28, 28);
    write(d.path(), "000001.png", 28, 28);
    write(d.path(), "grid.png", 60, 60); // ignored
    let t = load_sample_folder(d.path()).unwrap();
    assert_eq!(t.size(), [2, 1, 28, 28]);
    assert!(t.min().double_value(&[]) >= -1.0 && t.max().double_value(&[]) <= 1.0);

    write(d.path(), "000002.png", 32, 28);
    let e = load_sample_folder(d.path()).unwrap_err().to_string();
    assert!(e.contains("000002.png") && e.contains("differs"), "{e}");

    let d = tempfile::tempdir().unwrap();
    write(d.path(), "000000.png", 28, 28);
    std::fs::write(d.path().join("000001.png"), b"not a png").unwrap();
    let e = load_sample_folder(d.path()).unwrap_err().to_string();
    assert!(e.contains("000001.png") && e.contains("unreadable image"), "{e}");

    let d = tempfile::tempdir().unwrap();
    let e = load_sample_folder(d.path()).unwrap_err().to_string();
    assert!(e.contains("no samples.safetensors and no PNG"), "{e}");
}
