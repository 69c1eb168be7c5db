use burn::tensor::{Int, Tensor, backend::Backend};

/// 1-D sinusoidal encoding of patch indices (method.md §3), interleaved sin/cos as in Vaswani et al.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionalEncoding {
    d_model: usize,
}

impl PositionalEncoding {
    /// An encoding of width `d_model` (even).
    pub fn new(d_model: usize) -> Self {
        Self { d_model }
    }

    /// Encodes positions `[B, n]` as `[B, n, D]`: PE(i)[2k] = sin(i / 10000^(2k/D)), PE(i)[2k+1] = cos(…).
    pub fn encode<B: Backend>(&self, positions: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, n] = positions.dims();
        let half = self.d_model / 2;
        let device = positions.device();
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-(2.0 * k as f64 / self.d_model as f64) * 10000f64.ln()).exp() as f32)
            .collect();
        let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).reshape([1, 1, half]);
        let angles = positions.float().reshape([b, n, 1]) * freqs;
        Tensor::stack::<4>(vec![angles.clone().sin(), angles.cos()], 3).reshape([
            b,
            n,
            self.d_model,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn matches_the_closed_form() {
        let device = Default::default();
        let pos = Tensor::<Flex, 2, Int>::from_ints([[0, 3]], &device);
        let pe = PositionalEncoding::new(4)
            .encode(pos)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let want = [
            0.0,
            1.0,
            0.0,
            1.0,
            3f32.sin(),
            3f32.cos(),
            (0.03f32).sin(),
            (0.03f32).cos(),
        ];
        for (got, want) in pe.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{pe:?}");
        }
    }
}
