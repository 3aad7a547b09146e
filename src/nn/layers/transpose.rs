//! `Conv2DTranspose`: the gradient of a convolution with respect to its
//! input, used forward (upsampling in decoders and generators). It runs
//! `conv2d_backprop_input`, whose gradients are a convolution and a filter
//! gradient, so it needs no kernel or gradient rule of its own.

use super::{
    ConvShape, Layer, conv_config, conv_forward, ensure_built_nhwc, kernel_and_bias, padding_name, padding_of,
    unique_name,
};
use crate::core::error::{Error, Result};
use crate::nn::activations::Activation;
use crate::nn::initializers::Initializer;
use crate::nn::mixed_precision::{Policy, global_policy};
use crate::ops::conv::{self, Padding};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};

/// `keras.layers.Conv2DTranspose` over NHWC inputs.
///
/// Inputs `[batch, height, width, channels]` give `[batch, out_height,
/// out_width, filters]` with Keras' sizes: `height * stride` for "same",
/// `height * stride + max(k - stride, 0)` for "valid" (`k` the dilated
/// window), or `(height - 1) * stride + k + output_padding` ("valid") and
/// `(height - 1) * stride + k % 2 + output_padding` ("same") when
/// `output_padding` is set. The kernel is `[kh, kw, filters, channels]`,
/// as Keras and `tf.nn.conv2d_transpose` keep it.
pub struct Conv2DTranspose {
    name: String,
    /// Output channels.
    pub filters: usize,
    /// Window `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Upsampling factor `[height, width]` (`[1, 1]`).
    pub strides: [usize; 2],
    /// `Valid` (the default) or `Same`.
    pub padding: Padding,
    /// Extra rows and columns at the end of the output, each below its
    /// stride (`None`: Keras' sizes above).
    pub output_padding: Option<[usize; 2]>,
    /// Spacing of the kernel taps `[height, width]` (`[1, 1]`).
    pub dilation_rate: [usize; 2],
    /// Applied to the output (`Linear` by default).
    pub activation: Activation,
    /// Whether a bias `[filters]` is added (true).
    pub use_bias: bool,
    /// Initializer of the kernel (`GlorotUniform`).
    pub kernel_initializer: Initializer,
    /// Initializer of the bias (`Zeros`).
    pub bias_initializer: Initializer,
    /// The dtype policy (the global one when the layer was created).
    pub policy: Policy,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl Conv2DTranspose {
    /// `Conv2DTranspose(filters, kernel_size)` with Keras' defaults.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Conv2DTranspose {
        Conv2DTranspose {
            name: unique_name("conv2d_transpose"),
            filters,
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            output_padding: None,
            dilation_rate: [1, 1],
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            policy: global_policy(),
            kernel: None,
            bias: None,
        }
    }
    /// `dtype=`: the layer's dtype policy.
    pub fn dtype(mut self, p: Policy) -> Conv2DTranspose {
        self.policy = p;
        self
    }
    /// `strides=`.
    pub fn strides(mut self, s: [usize; 2]) -> Conv2DTranspose {
        self.strides = s;
        self
    }
    /// `padding=`: "same" or "valid".
    ///
    /// Returns [`Error::InvalidArgument`] for any other string.
    pub fn padding(mut self, p: &str) -> Result<Conv2DTranspose> {
        self.padding = padding_of(p)?;
        Ok(self)
    }
    /// `output_padding=`: each entry below its stride (checked when the
    /// layer sees its input).
    pub fn output_padding(mut self, p: [usize; 2]) -> Conv2DTranspose {
        self.output_padding = Some(p);
        self
    }
    /// `dilation_rate=`.
    pub fn dilation_rate(mut self, d: [usize; 2]) -> Conv2DTranspose {
        self.dilation_rate = d;
        self
    }
    /// `activation=`.
    pub fn activation(mut self, a: Activation) -> Conv2DTranspose {
        self.activation = a;
        self
    }
    /// `use_bias=`.
    pub fn use_bias(mut self, b: bool) -> Conv2DTranspose {
        self.use_bias = b;
        self
    }
    /// `kernel_initializer=`.
    pub fn kernel_initializer(mut self, i: Initializer) -> Conv2DTranspose {
        self.kernel_initializer = i;
        self
    }

    fn attrs(&self) -> conv::Conv2d {
        conv::Conv2d {
            strides: self.strides,
            padding: self.padding,
            dilations: self.dilation_rate,
            groups: 1,
        }
    }

    /// One output size along an axis (Keras' `_get_output_shape_given_tf_padding`).
    fn out_len(&self, axis: usize, input: usize) -> Option<usize> {
        let (s, d, k) = (self.strides[axis], self.dilation_rate[axis], self.kernel_size[axis]);
        let k = k.checked_sub(1)?.checked_mul(d)?.checked_add(1)?;
        let before = input.checked_sub(1)?.checked_mul(s)?;
        match (self.padding, self.output_padding) {
            (Padding::Same, None) => input.checked_mul(s),
            (Padding::Same, Some(p)) => before.checked_add(k % 2)?.checked_add(p[axis]),
            (_, None) => before.checked_add(k.max(s)),
            (_, Some(p)) => before.checked_add(k)?.checked_add(p[axis]),
        }
    }
}

impl Layer for Conv2DTranspose {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let shape = ConvShape {
            filters: self.filters,
            kernel_size: serde_json::json!(self.kernel_size),
            strides: serde_json::json!(self.strides),
            padding: padding_name(self.padding, &self.name)?,
            dilation_rate: serde_json::json!(self.dilation_rate),
            groups: 1,
        };
        let inits = (&self.kernel_initializer, &self.bias_initializer);
        let mut c = conv_config(&self.name, &self.policy, shape, self.activation, self.use_bias, inits);
        if let Some(m) = c.as_object_mut() {
            // Keras' transposed convolutions have no groups.
            m.remove("groups");
            m.insert("output_padding".into(), serde_json::json!(self.output_padding));
        }
        Ok(c)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Conv2DTranspose"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        self.output_shape(input_shape)?;
        let ks = [self.kernel_size[0], self.kernel_size[1], self.filters, input_shape[2]];
        let vt = self.policy.variable_dtype();
        let k = self.kernel_initializer.init(&ks, vt, device)?;
        self.kernel = Some(Variable::new(k, &format!("{}/kernel", self.name)));
        if self.use_bias {
            let b = self.bias_initializer.init(&[self.filters], vt, device)?;
            self.bias = Some(Variable::new(b, &format!("{}/bias", self.name)));
        }
        Ok(())
    }
    fn built(&self) -> bool {
        self.kernel.is_some()
    }
    /// Checks what Keras checks (positive sizes, `output_padding` below the
    /// strides), then that a convolution of the output gives back the
    /// input's size, as `tf.nn.conv2d_transpose` needs.
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let &[h, w, c] = s else {
            return Err(Error::shape(
                "Conv2DTranspose",
                &[s],
                "expects examples [height, width, channels]",
            ));
        };
        let bad = |msg: String| Error::arg("Conv2DTranspose", format!("layer {}: {msg}", self.name));
        if self.filters == 0 || self.kernel_size.contains(&0) {
            return Err(bad(format!(
                "filters {} and kernel_size {:?} must be positive",
                self.filters, self.kernel_size
            )));
        }
        self.attrs().check("Conv2DTranspose")?;
        if let Some(p) = self.output_padding
            && (p[0] >= self.strides[0] || p[1] >= self.strides[1])
        {
            return Err(bad(format!(
                "output_padding {p:?} must be below the strides {:?}",
                self.strides
            )));
        }
        if h == 0 || w == 0 || c == 0 {
            return Err(Error::shape(
                "Conv2DTranspose",
                &[s],
                format!("layer {}: examples must not be empty", self.name),
            ));
        }
        let (Some(oh), Some(ow)) = (self.out_len(0, h), self.out_len(1, w)) else {
            return Err(Error::shape(
                "Conv2DTranspose",
                &[s],
                format!("layer {}: the output size overflows", self.name),
            ));
        };
        let (fh, fw) = self
            .attrs()
            .dims("Conv2DTranspose", oh, ow, self.kernel_size[0], self.kernel_size[1])?;
        if (fh.out, fw.out) != (h, w) {
            return Err(Error::shape(
                "Conv2DTranspose",
                &[s],
                format!(
                    "layer {}: an output of {oh}x{ow} convolves back to {}x{}, not {h}x{w}",
                    self.name, fh.out, fw.out
                ),
            ));
        }
        Ok(vec![oh, ow, self.filters])
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        ensure_built_nhwc(self, x)?;
        let out = self.output_shape(&x.shape()[1..])?;
        let full = [x.shape()[0], out[0], out[1], out[2]];
        let (s, p, d) = (self.strides, self.padding, self.dilation_rate);
        conv_forward(
            x,
            &self.policy,
            &self.name,
            ("kernel", &self.kernel),
            &self.bias,
            self.activation,
            |x, k| conv::conv2d_backprop_input(&full, k, x, s, p, d),
        )
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        kernel_and_bias(("kernel", &self.kernel), &self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keras 3.15's output sizes (`ops.conv_transpose` shapes) for every
    /// padding with and without output_padding.
    #[test]
    fn sizes_follow_keras() {
        let l = |k: usize, s: usize| Conv2DTranspose::new(2, [k, k]).strides([s, s]);
        let hw = |l: &Conv2DTranspose, n: usize| l.output_shape(&[n, n, 3]).map(|o| o[0]);
        assert_eq!(hw(&l(3, 2), 5).unwrap(), 11);
        assert_eq!(hw(&l(1, 3), 4).unwrap(), 12, "k < stride: in * stride");
        assert_eq!(hw(&l(3, 2).padding("same").unwrap(), 5).unwrap(), 10);
        assert_eq!(hw(&l(4, 2).output_padding([1, 1]), 5).unwrap(), 13);
        assert_eq!(
            hw(&l(3, 2).padding("same").unwrap().output_padding([1, 1]), 5).unwrap(),
            10
        );
        // 8 rows convolve back to 4, not 5: TensorFlow refuses it too.
        assert!(hw(&l(4, 2).padding("same").unwrap().output_padding([0, 0]), 5).is_err());
        assert_eq!(hw(&l(3, 1).dilation_rate([2, 2]), 4).unwrap(), 8);
    }

    #[test]
    fn refuses_what_keras_refuses() {
        let l = Conv2DTranspose::new(2, [3, 3]).strides([2, 2]);
        assert!(matches!(l.output_shape(&[4, 4]), Err(Error::Shape { .. })));
        let op = Conv2DTranspose::new(2, [3, 3]).strides([2, 2]).output_padding([2, 0]);
        assert!(matches!(
            op.output_shape(&[4, 4, 1]),
            Err(Error::InvalidArgument { .. })
        ));
        let zero = Conv2DTranspose::new(2, [3, 3]).strides([0, 1]);
        assert!(matches!(
            zero.output_shape(&[4, 4, 1]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(Conv2DTranspose::new(0, [3, 3]).output_shape(&[4, 4, 1]).is_err());
        assert!(Conv2DTranspose::new(2, [0, 3]).output_shape(&[4, 4, 1]).is_err());
        assert!(l.output_shape(&[0, 4, 1]).is_err());
        let huge = Conv2DTranspose::new(2, [3, 3]).strides([usize::MAX, 1]);
        assert!(matches!(huge.output_shape(&[4, 4, 1]), Err(Error::Shape { .. })));
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![1.0f32; 8], &[2, 4], &dev).unwrap();
        assert!(matches!(
            Conv2DTranspose::new(2, [3, 3]).call(&x, false),
            Err(Error::Shape { .. })
        ));
    }

    /// With a kernel of ones and stride 2, every input pixel adds itself
    /// to its 2x2 output block (no overlap): the output is the input
    /// repeated, summed over channels.
    #[test]
    fn stride_equal_to_kernel_scatters_pixels() {
        let dev = Device::Cpu;
        let mut l = Conv2DTranspose::new(1, [2, 2])
            .strides([2, 2])
            .kernel_initializer(Initializer::Ones)
            .use_bias(false);
        let x = Tensor::from_vec(vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0], &[1, 2, 2, 2], &dev).unwrap();
        let y = l.call(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 4, 4, 1]);
        let v = y.to_vec::<f32>().unwrap();
        let want = [
            11.0, 11.0, 22.0, 22.0, 11.0, 11.0, 22.0, 22.0, 33.0, 33.0, 44.0, 44.0, 33.0, 33.0, 44.0, 44.0,
        ];
        assert_eq!(v, want);
        assert_eq!(l.weights()[0].1.shape(), &[2, 2, 1, 2]);
        let c = l.keras_config().unwrap();
        assert_eq!(c["output_padding"], serde_json::Value::Null);
        assert!(c.get("groups").is_none());
    }
}
