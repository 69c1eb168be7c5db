use burn::tensor::{Tensor, backend::Backend};

use crate::{PatchGrid, RemainderPolicy, TilingError};

/// Cuts a batch of images `[B, C, H, W]` into patches `[B, N, C, p, p]`, in the grid's row-major order.
///
/// Non-overlapping grids (stride = patch) are a reshape and a permute; overlapping or gapped
/// grids slice patch by patch.
pub fn extract_patches<B: Backend>(
    grid: &PatchGrid,
    images: Tensor<B, 4>,
) -> Result<Tensor<B, 5>, TilingError> {
    let [batch, channels, height, width] = images.dims();
    grid.check_image([height, width])?;
    let p = grid.patch();
    let images = match grid.remainder() {
        RemainderPolicy::ZeroPad if grid.padded_size() != [height, width] => {
            let [ph, pw] = grid.padded_size();
            Tensor::zeros([batch, channels, ph, pw], &images.device())
                .slice_assign([0..batch, 0..channels, 0..height, 0..width], images)
        }
        _ => images,
    };
    if grid.stride() == p {
        let (rows, cols) = (grid.rows(), grid.cols());
        let used = images.slice([0..batch, 0..channels, 0..rows * p, 0..cols * p]);
        return Ok(used
            .reshape([batch, channels, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch, grid.len(), channels, p, p]));
    }
    let patches = (0..grid.len())
        .map(|i| {
            let [y, x] = grid.origin(i);
            images
                .clone()
                .slice([0..batch, 0..channels, y..y + p, x..x + p])
        })
        .collect::<Vec<_>>();
    Ok(Tensor::stack(patches, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn image(h: usize, w: usize) -> Tensor<Flex, 4> {
        let values: Vec<f32> = (0..2 * h * w).map(|v| v as f32).collect();
        Tensor::from_data(TensorData::new(values, [1, 2, h, w]), &Default::default())
    }

    fn pixel(t: &Tensor<Flex, 5>, idx: [usize; 5]) -> f32 {
        let r = idx.map(|i| i..i + 1);
        t.clone().slice(r).into_scalar()
    }

    #[test]
    fn reshape_path_matches_slicing_path() {
        let img = image(7, 9);
        for policy in [RemainderPolicy::Drop, RemainderPolicy::ZeroPad] {
            let grid = PatchGrid::new([7, 9], 3, 3, policy).unwrap();
            let fast = extract_patches(&grid, img.clone()).unwrap();
            for i in 0..grid.len() {
                let [y, x] = grid.origin(i);
                for (dy, dx) in [(0, 0), (2, 1), (1, 2)] {
                    let (yy, xx) = (y + dy, x + dx);
                    let want = if yy < 7 && xx < 9 {
                        (7 * 9 + yy * 9 + xx) as f32
                    } else {
                        0.0
                    };
                    assert_eq!(
                        pixel(&fast, [0, i, 1, dy, dx]),
                        want,
                        "patch {i} ({policy:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn overlapping_grid_slices_each_patch() {
        let grid = PatchGrid::new([6, 6], 4, 2, RemainderPolicy::Drop).unwrap();
        let patches = extract_patches(&grid, image(6, 6)).unwrap();
        assert_eq!(patches.dims(), [1, 4, 2, 4, 4]);
        assert_eq!(pixel(&patches, [0, 3, 0, 0, 0]), (2 * 6 + 2) as f32);
    }

    #[test]
    fn rejects_images_of_another_size() {
        let grid = PatchGrid::new([8, 8], 4, 4, RemainderPolicy::Drop).unwrap();
        assert!(matches!(
            extract_patches(&grid, image(6, 6)),
            Err(TilingError::ImageSizeMismatch { .. })
        ));
    }
}
