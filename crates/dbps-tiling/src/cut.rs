use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use dbps_kernels::same_type;
use rayon::prelude::*;

use crate::{PatchGrid, TilingError};

/// Cuts only the patches named by `picks` — `(image, grid index)` pairs — out of images
/// `[B, C, H, W]`: `[picks.len(), C, p, p]`, in the order of `picks`.
///
/// Memory is that of the cut patches, whatever the grid's size: selection cuts one chunk of
/// L candidates at a time, the gradient pass the M winners. Pixels past the image's edge (a
/// zero-padded remainder) are zeros. On an autodiff backend the patches stay on the tape, so
/// gradients reach the image pixels they came from.
pub fn cut_patches<B: Backend>(
    grid: &PatchGrid,
    images: &Tensor<B, 4>,
    picks: &[(usize, usize)],
) -> Result<Tensor<B, 4>, TilingError> {
    let [batch, channels, height, width] = images.dims();
    grid.check_image([height, width])?;
    let p = grid.patch();
    if let Some(cut) = cut_on_host(grid, images, picks) {
        return Ok(cut);
    }
    let patches: Vec<Tensor<B, 4>> = picks
        .iter()
        .map(|&(image, index)| {
            assert!(image < batch, "image {image} of a batch of {batch}");
            let [y, x] = grid.origin(index);
            let (y_end, x_end) = ((y + p).min(height), (x + p).min(width));
            let window = images
                .clone()
                .slice([image..image + 1, 0..channels, y..y_end, x..x_end]);
            if (y_end - y, x_end - x) == (p, p) {
                window
            } else {
                window.pad((0, p - (x_end - x), 0, p - (y_end - y)), 0.0)
            }
        })
        .collect();
    if patches.is_empty() {
        return Ok(Tensor::zeros([0, channels, p, p], &images.device()));
    }
    Ok(Tensor::cat(patches, 0))
}

/// [`cut_patches`] for burn-flex images in contiguous f32: one parallel copy of the picked
/// windows, no tensor operation per patch. `None` for any other backend or layout.
fn cut_on_host<B: Backend>(
    grid: &PatchGrid,
    images: &Tensor<B, 4>,
    picks: &[(usize, usize)],
) -> Option<Tensor<B, 4>> {
    let [batch, channels, height, width] = images.dims();
    let images: Tensor<Flex, 4> = same_type(images.clone()).ok()?;
    let device = images.device();
    let primitive = images.into_primitive().tensor();
    let pixels = primitive.as_slice::<f32>()?;
    let p = grid.patch();
    let mut out = vec![0f32; picks.len() * channels * p * p];
    out.par_chunks_mut((channels * p * p).max(1))
        .zip(picks)
        .for_each(|(patch, &(image, index))| {
            assert!(image < batch, "image {image} of a batch of {batch}");
            let [y, x] = grid.origin(index);
            let (rows, cols) = (p.min(height - y), p.min(width - x));
            for c in 0..channels {
                let plane = &pixels[(image * channels + c) * height * width..];
                for r in 0..rows {
                    let src = &plane[(y + r) * width + x..][..cols];
                    patch[(c * p + r) * p..][..cols].copy_from_slice(src);
                }
            }
        });
    let cut =
        Tensor::<Flex, 4>::from_data(TensorData::new(out, [picks.len(), channels, p, p]), &device);
    same_type(cut).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RemainderPolicy, extract_patches};
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};
    /// Cutting picks equals extracting every patch and taking the picked ones, on the host
    /// path (burn-flex) and the tensor path (autodiff).
    #[test]
    fn cut_equals_extract_then_pick() {
        check_cut::<Flex>();
        check_cut::<burn::backend::Autodiff<Flex>>();
    }

    fn check_cut<B: Backend>() {
        let device = Default::default();
        for (policy, stride) in [
            (RemainderPolicy::Drop, 4),
            (RemainderPolicy::ZeroPad, 4),
            (RemainderPolicy::Drop, 3),
        ] {
            let grid = PatchGrid::new([10, 13], 4, stride, policy).unwrap();
            let images = Tensor::<B, 4>::random([2, 3, 10, 13], Distribution::Default, &device);
            let all = extract_patches(&grid, images.clone()).unwrap();
            let picks = [(1, grid.len() - 1), (0, 0), (1, 2), (0, grid.len() / 2)];
            let cut = cut_patches(&grid, &images, &picks).unwrap();
            for (k, &(b, i)) in picks.iter().enumerate() {
                let want = all
                    .clone()
                    .slice([b..b + 1, i..i + 1])
                    .reshape([1, 3, 4, 4]);
                let got = cut.clone().narrow(0, k, 1);
                got.into_data()
                    .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(0.0));
            }
        }
    }
}
