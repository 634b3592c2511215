"""AdamW for pretraining: linear warm-up then linear / polynomial decay, clipping, accumulation.

Backend-agnostic Keras 3 (runs under TensorFlow and JAX).
"""

import keras
from keras import ops

from nlpkit.errors import NlpkitError

# Short variable names that hold layer-norm scales/offsets or biases (Keras names them so).
_NO_DECAY_NAMES = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="nlpkit")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate rising linearly from 0 to its peak, then decaying polynomially to an end value.

    lr(step) = peak * step / warmup_steps                                  for step < warmup_steps
             = (peak - end) * (1 - (step - warmup) / (total - warmup)) ** power + end   afterwards
    and `end` once `step >= total_steps`. `power=1` is linear decay.

    Args:
      peak_learning_rate: the rate reached at the end of warm-up.
      total_steps: the step at which the decay reaches `end_learning_rate`.
      warmup_steps: length of the linear warm-up (0 for none).
      end_learning_rate: the final rate.
      power: exponent of the decay.
      gradient_accumulation_steps: micro-batches per update. Keras (3.15) calls a schedule with the
        count of micro-batches, not of updates, when the optimizer accumulates gradients; the
        schedule divides it back so that `step` always counts updates.
    """

    def __init__(
        self,
        peak_learning_rate,
        total_steps,
        warmup_steps=0,
        end_learning_rate=0.0,
        power=1.0,
        gradient_accumulation_steps=1,
    ):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise NlpkitError(
                f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps} and {total_steps}",
                hint="check --max-steps and --warmup-steps",
            )
        if peak_learning_rate <= 0 or end_learning_rate < 0 or power <= 0:
            raise NlpkitError(
                f"learning rates must be positive and power > 0, got peak {peak_learning_rate}, "
                f"end {end_learning_rate}, power {power}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)

    def __call__(self, step):
        step = ops.cast(ops.floor_divide(step, self.gradient_accumulation_steps), "float32")
        warmup = ops.multiply(self.peak_learning_rate, step / max(self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        decayed = (self.peak_learning_rate - self.end_learning_rate) * ops.power(
            1.0 - progress, self.power
        ) + self.end_learning_rate
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }


def is_norm_or_bias(variable):
    """Layer-norm scales/offsets and biases: rank <= 1, or named like a bias (attention biases are 2-D)."""
    name = variable.name.split("/")[-1]
    return len(variable.shape) <= 1 or any(word in name for word in _NO_DECAY_NAMES)


def create_optimizer(
    trainable_variables,
    *,
    learning_rate,
    total_steps,
    warmup_steps=0,
    end_learning_rate=0.0,
    power=1.0,
    weight_decay=0.01,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    global_clipnorm=1.0,
    gradient_accumulation_steps=1,
    loss_scaling=False,
):
    """AdamW on `WarmupPolynomialDecay`, without weight decay on layer norms and biases.

    `trainable_variables` (e.g. `model.trainable_variables`) decides which variables are exempt from
    decay; the optimizer is not built yet. Gradients are clipped to `global_clipnorm` (None: no
    clipping) after accumulation: with `gradient_accumulation_steps=k` the optimizer averages k
    micro-batch gradients and updates once, and the schedule counts updates, not micro-batches.
    `loss_scaling=True` (for mixed_float16) wraps it in Keras' dynamic `LossScaleOptimizer`.
    """
    if gradient_accumulation_steps < 1:
        raise NlpkitError(f"gradient accumulation steps must be >= 1, got {gradient_accumulation_steps}")
    schedule = WarmupPolynomialDecay(
        learning_rate, total_steps, warmup_steps, end_learning_rate, power, gradient_accumulation_steps
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps if gradient_accumulation_steps > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_list=[v for v in trainable_variables if is_norm_or_bias(v)])
    if loss_scaling:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
