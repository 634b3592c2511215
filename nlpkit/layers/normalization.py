"""Root-mean-square layer normalisation (Zhang & Sennrich 2019), as Model Garden's `RMSNorm`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlpkit")
class RMSNorm(keras.layers.Layer):
    """`y = x / sqrt(mean(x^2 over axis) + epsilon) * scale`: a layer norm without centring or bias.

    Computes in float32 under mixed precision and returns the compute dtype.

    Args:
      axis: int or list of ints normalised over (default the last).
      epsilon: added to the mean square (Model Garden's default 1e-6).

    Call: `layer(x)`, x of any shape. Output: the shape of x. Weight: `scale`, ones, of the
    size of `axis` (broadcast over the other axes), as Model Garden's.
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.axis = [axis] if isinstance(axis, int) else list(axis)
        self.epsilon = epsilon

    def build(self, input_shape):
        scale_shape = [1] * len(input_shape)
        for dim in self.axis:
            scale_shape[dim] = input_shape[dim]
        self.scale = self.add_weight(name="scale", shape=tuple(scale_shape), initializer="ones", autocast=False)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean_square = ops.mean(ops.square(x), axis=self.axis, keepdims=True)
        outputs = x * ops.rsqrt(mean_square + self.epsilon) * ops.cast(self.scale, "float32")
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config
