//! Image I/O: tensors in [-1, 1] <-> 8-bit PNG, and sample grids.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// [B, C, H, W] in [-1, 1] -> [B, H, W, C] u8 (round half up of (x + 1) * 127.5, as diffusers'
/// `numpy_to_pil` after `(x / 2 + 0.5).clamp(0, 1)` and `* 255 .round()`).
pub fn to_u8(images: &Tensor) -> Tensor {
    ((images.to_kind(Kind::Float) / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous()
}

/// Write one [H, W, C] u8 tensor (C = 1 or 3) as PNG, atomically (temp file + rename).
pub fn save_png(hwc: &Tensor, path: &Path) -> Result<()> {
    let s = hwc.size();
    let (h, w, c) = (s[0] as u32, s[1] as u32, s[2]);
    let data = Vec::<u8>::try_from(&hwc.flatten(0, -1).to_device(tch::Device::Cpu))?;
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => return Err(Error::Input(format!("{}: cannot save {c}-channel image as PNG", path.display()))),
    };
    Ok(fd_model::io::write_atomic_with(path, |tmp| {
        image::save_buffer_with_format(tmp, &data, w, h, color, image::ImageFormat::Png)
    })?)
}

/// Write [F, H, W, C] u8 frames (C = 1 or 3) as a looping animated GIF, `delay_ms` per frame,
/// atomically (temp file + rename).
pub fn save_gif(frames: &Tensor, path: &Path, delay_ms: u32) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let s = frames.size();
    let (f, h, w, c) = (s[0], s[1] as u32, s[2] as u32, s[3]);
    if !matches!(c, 1 | 3) {
        return Err(Error::Input(format!("{}: cannot save {c}-channel frames as GIF", path.display())));
    }
    // RGBA, as the encoder takes it
    let rgb = if c == 1 { frames.repeat([1, 1, 1, 3]) } else { frames.shallow_clone() };
    let alpha = Tensor::full([f, s[1], s[2], 1], 255, (Kind::Uint8, rgb.device()));
    let rgba = Tensor::cat(&[rgb, alpha], 3).to_device(tch::Device::Cpu);
    let mut out = Vec::with_capacity(f as usize);
    for j in 0..f {
        let data = Vec::<u8>::try_from(&rgba.get(j).flatten(0, -1))?;
        let buf = image::RgbaImage::from_raw(w, h, data)
            .ok_or_else(|| Error::Input(format!("{}: frame {j} has the wrong size", path.display())))?;
        out.push(image::Frame::from_parts(buf, 0, 0, image::Delay::from_numer_denom_ms(delay_ms, 1)));
    }
    Ok(fd_model::io::write_atomic_with(path, |tmp| -> std::result::Result<(), image::ImageError> {
        let mut enc = GifEncoder::new(std::fs::File::create(tmp)?);
        enc.set_repeat(Repeat::Infinite)?;
        enc.encode_frames(out)
    })?)
}

/// Tile [B, C, H, W] images (in [-1, 1]) into a grid with `cols` columns and 2-px white padding.
pub fn grid(images: &Tensor, cols: i64) -> Tensor {
    let s = images.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let rows = (b + cols - 1) / cols;
    let pad = 2;
    let out = Tensor::ones([c, rows * (h + pad) + pad, cols * (w + pad) + pad], (Kind::Float, images.device()));
    for i in 0..b {
        let (r, col) = (i / cols, i % cols);
        out.narrow(1, pad + r * (h + pad), h).narrow(2, pad + col * (w + pad), w).copy_(&images.get(i));
    }
    out.unsqueeze(0)
}

/// Load a PNG as [C, H, W] in [-1, 1] (grayscale stays 1 channel, color becomes RGB).
pub fn load_png(path: &Path) -> Result<Tensor> {
    let img = image::open(path)
        .map_err(|e| Error::Format { path: path.to_path_buf(), msg: format!("unreadable image: {e}") })?;
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (data, c) = match img.color().channel_count() {
        1 | 2 => (img.to_luma8().into_raw(), 1),
        _ => (img.to_rgb8().into_raw(), 3),
    };
    Ok(Tensor::from_slice(&data).view([h, w, c]).permute([2, 0, 1]).to_kind(Kind::Float) / 127.5 - 1.0)
}

/// The images of a sample folder: `samples.safetensors` (written by `fd sample`) when present,
/// else every `*.png` except `grid.png`, in name order. Mixed sizes and unreadable files are errors.
pub fn load_sample_folder(dir: &Path) -> Result<Tensor> {
    let raw = dir.join("samples.safetensors");
    if raw.is_file() {
        return Ok(fd_model::io::read_tensor(&raw, "samples")?);
    }
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png") && p.file_name().is_some_and(|n| n != "grid.png"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!("{}: no samples.safetensors and no PNG images", dir.display())));
    }
    let mut imgs = Vec::with_capacity(files.len());
    for f in &files {
        let t = load_png(f)?;
        if let Some(first) = imgs.first().map(Tensor::size) {
            if t.size() != first {
                return Err(Error::Format {
                    path: f.clone(),
                    msg: format!("image size {:?} differs from the folder's first image {:?}", t.size(), first),
                });
            }
        }
        imgs.push(t);
    }
    Ok(Tensor::stack(&imgs, 0))
}
