//! From final latents to images: the VAE decoder (latent models) or the latents themselves, and
//! video frames.

use tch::{Kind, Tensor};

use super::Denoiser;
use crate::Result;

impl Denoiser {
    /// Latent model: latents -> images in [-1, 1] (divides by the VAE scaling factor first).
    /// Pixel model: returns the sample unchanged.
    ///
    /// A video model's [B, C, F, h, w] latents are decoded frame by frame (as the text-to-video
    /// pipeline does) and returned as one film strip per video, [B, C', H, F * W]: frame j is the
    /// columns j*W..(j+1)*W (see [`Denoiser::frames_of`]).
    pub fn to_images(&self, latents: &Tensor) -> Result<Tensor> {
        let frames = self.manifest.frames;
        let z = match frames {
            // [B, C, F, h, w] -> [B*F, C, h, w]
            Some(f) => {
                let s = latents.size();
                latents.permute([0, 2, 1, 3, 4]).reshape([s[0] * f, s[1], s[3], s[4]])
            }
            None => latents.shallow_clone(),
        };
        let images = match (&self.vae_decoder, &self.manifest.vae) {
            (Some(vae), Some(spec)) => {
                let z = (z / spec.scaling_factor).to_device(self.device).to_kind(self.manifest.vae_kind());
                tch::no_grad(|| vae.forward_ts(&[z]))?.to_kind(Kind::Float)
            }
            _ => z,
        };
        Ok(match frames {
            // [B*F, C', H, W] -> [B, F, C', H, W] -> [B, C', H, F, W] -> [B, C', H, F*W]
            Some(f) => {
                let s = images.size();
                images.reshape([-1, f, s[1], s[2], s[3]]).permute([0, 2, 3, 1, 4]).reshape([-1, s[1], s[2], f * s[3]])
            }
            None => images,
        })
    }

    /// The frames of film strips [B, C, H, F * W] (what [`Denoiser::to_images`] gives a video
    /// model) as [B, F, C, H, W]; None for an image model.
    pub fn frames_of(&self, strips: &Tensor) -> Option<Tensor> {
        let f = self.manifest.frames?;
        let s = strips.size();
        Some(strips.reshape([s[0], s[1], s[2], f, s[3] / f]).permute([0, 3, 1, 2, 4]))
    }
}
