"""Random-feature Gaussian process output layer, its Laplace covariance and the SNGP classification head.

`covariance`: `LaplaceRandomFeatureCovariance`, `ResetCovarianceCallback`; `layer`:
`RandomFeatureGaussianProcess`, `mean_field_logits`; `head`: `GaussianProcessClassificationHead`.
"""

from nlpkit.layers.gaussian_process.covariance import (
    GP_COV_LIKELIHOODS,
    LaplaceRandomFeatureCovariance,
    ResetCovarianceCallback,
)
from nlpkit.layers.gaussian_process.head import GP_HEAD_DEFAULTS, GaussianProcessClassificationHead
from nlpkit.layers.gaussian_process.layer import (
    DEFAULT_MEAN_FIELD_FACTOR,
    GP_KERNEL_TYPES,
    RandomFeatureGaussianProcess,
    mean_field_logits,
)

__all__ = [
    "DEFAULT_MEAN_FIELD_FACTOR",
    "GP_COV_LIKELIHOODS",
    "GP_HEAD_DEFAULTS",
    "GP_KERNEL_TYPES",
    "GaussianProcessClassificationHead",
    "LaplaceRandomFeatureCovariance",
    "RandomFeatureGaussianProcess",
    "ResetCovarianceCallback",
    "mean_field_logits",
]
