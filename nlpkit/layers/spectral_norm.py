"""Spectral normalisation: bound the largest singular value of a dense layer's kernel.

Used by SNGP ("Simple and Principled Uncertainty Estimation with Deterministic Deep Learning via
Distance Awareness"): hidden layers whose spectral norm is at most `norm_multiplier` (< 1 is
typical) keep distances in the input space roughly distances in the feature space, so the
Gaussian-process output layer can tell inputs far from the training data.
"""

import math

import keras
from keras import ops

from nlpkit.errors import NlpkitError

# Floor for vector norms, so a zero kernel gives a zero vector rather than NaN.
_EPSILON = 1e-12


def _l2_normalize(vector):
    return vector / ops.maximum(ops.norm(vector), _EPSILON)


def _kernel_matricization(layer):
    """(permutation, number of input axes) turning the kernel into an [inputs, outputs] matrix.

    Dense: the kernel already is `[D_in, D_out]`. EinsumDense: kernel axes that are summed over
    (they appear in the input but not in the output) become rows, all others columns. For an
    equation with a batch axis inside the kernel this matrix has a norm at least that of every
    block, so bounding it still bounds each block.
    """
    if isinstance(layer, keras.layers.EinsumDense):
        input_spec, rest = layer.equation.split(",")
        kernel_spec, output_spec = rest.split("->")
        rows = [i for i, axis in enumerate(kernel_spec) if axis in input_spec and axis not in output_spec]
        cols = [i for i in range(len(kernel_spec)) if i not in rows]
        return rows + cols, len(rows)
    return [0, 1], 1


@keras.saving.register_keras_serializable(package="nlpkit")
class SpectralNormalization(keras.layers.Wrapper):
    """Wraps a `Dense` or `EinsumDense` layer so its kernel's spectral norm stays <= `norm_multiplier`.

    The largest singular value sigma of the kernel (as an `[inputs, outputs]` matrix) is estimated
    by power iteration from a persistent vector `u` (a non-trainable weight, updated in training
    calls only; inference reuses the stored `u`). When sigma > `norm_multiplier` the layer computes
    with the kernel `norm_multiplier / sigma * W`; otherwise with `W` unchanged. Gradients flow
    through sigma (with `u` held constant), as in spectral-normalised training.

    The kernel variable itself is never overwritten: the scale is applied to the layer's input,
    `(c * x) W + b = x (c * W) + b`, which is exact for layers linear in their kernel — hence
    only `Dense` and `EinsumDense` (and their subclasses) are accepted.

    Args:
      layer: the `keras.layers.Dense` or `keras.layers.EinsumDense` to wrap.
      iteration: power-iteration steps per training call (>= 1).
      norm_multiplier: the bound on the spectral norm (> 0).
      inhere_layer_name: if True and no `name` is given, the wrapper takes the wrapped layer's name.

    Input/output: those of the wrapped layer, e.g. `[B, ..., D] -> [B, ..., units]`.
    """

    def __init__(self, layer, iteration=1, norm_multiplier=0.95, inhere_layer_name=False, **kwargs):
        if not isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            raise NlpkitError(
                f"SpectralNormalization(layer=...) got a {type(layer).__name__}",
                hint="wrap a keras.layers.Dense or keras.layers.EinsumDense",
            )
        if int(iteration) < 1:
            raise NlpkitError(f"SpectralNormalization(iteration={iteration}) must be >= 1")
        if float(norm_multiplier) <= 0:
            raise NlpkitError(f"SpectralNormalization(norm_multiplier={norm_multiplier}) must be > 0")
        if inhere_layer_name and kwargs.get("name") is None:
            kwargs["name"] = layer.name
        super().__init__(layer, **kwargs)
        self.iteration = int(iteration)
        self.norm_multiplier = float(norm_multiplier)
        self.inhere_layer_name = bool(inhere_layer_name)

    def build(self, input_shape):
        super().build(input_shape)
        self._permutation, num_row_axes = _kernel_matricization(self.layer)
        kernel_shape = [self.layer.kernel.shape[i] for i in self._permutation]
        self._matrix_shape = (math.prod(kernel_shape[:num_row_axes]), math.prod(kernel_shape[num_row_axes:]))
        # Right singular vector estimate; float32 and never autocast, the iteration needs the precision.
        self.u = self.add_weight(
            name="u",
            shape=(self._matrix_shape[1],),
            initializer="random_normal",
            trainable=False,
            dtype="float32",
            autocast=False,
            aggregation="mean",  # every replica computes the same u from the same kernel
        )

    def _kernel_matrix(self):
        kernel = ops.cast(self.layer.kernel, "float32")
        return ops.reshape(ops.transpose(kernel, self._permutation), self._matrix_shape)

    def _power_iteration(self, matrix):
        """`iteration` steps from the stored u; returns the new unit u (no gradient through it)."""
        matrix = ops.stop_gradient(matrix)
        u = _l2_normalize(self.u)
        for _ in range(self.iteration):
            v = _l2_normalize(ops.matmul(matrix, u))
            u = _l2_normalize(ops.matmul(ops.transpose(matrix), v))
        return u

    def spectral_norm_estimate(self, training=False):
        """sigma = ||W u|| for the stored unit u (after updating u when `training`)."""
        matrix = self._kernel_matrix()
        if training:
            u = self._power_iteration(matrix)
            self.u.assign(u)
        else:
            u = ops.stop_gradient(_l2_normalize(self.u))
        return ops.norm(ops.matmul(matrix, u))

    def call(self, inputs, training=None):
        sigma = self.spectral_norm_estimate(training=bool(training))
        # Rescale only when the norm exceeds the bound (a smaller norm is left as it is).
        scale = ops.minimum(1.0, self.norm_multiplier / ops.maximum(sigma, _EPSILON))
        return self.layer(inputs * ops.cast(scale, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "iteration": self.iteration,
            "norm_multiplier": self.norm_multiplier,
            "inhere_layer_name": self.inhere_layer_name,
        }
