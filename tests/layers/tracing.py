"""The shape of every intermediate tensor a function builds, read from its traced graph.

Running a layer shows only its outputs; what it allocates on the way (a rank-6 softmax input, a
`[B, T, S]` mask inside an O(n) attention) shows in the trace: a TensorFlow graph, or a jaxpr
under JAX (sub-jaxprs of jit, scan, ... included). Arguments are traced at their exact shapes.
"""

import keras
import pytest


def _tf_shapes(fn, args):
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*(tf.TensorSpec(a.shape, a.dtype) for a in args)).graph
    return [
        (op.type, tuple(out.shape.as_list()))
        for op in graph.get_operations()
        for out in op.outputs
        if out.shape.rank is not None
    ]


def _jax_shapes(fn, args):
    import jax

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            yield from ((str(eqn.primitive), tuple(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from walk(inner)

    return list(walk(jax.make_jaxpr(fn)(*args).jaxpr))


def intermediate_shapes(fn, *args):
    """(op, shape) of every tensor the traced `fn(*args)` builds (unknown dims are None)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_shapes(fn, args)
    if backend == "jax":
        return _jax_shapes(fn, args)
    pytest.fail(f"no tracer for the {backend} backend in the tests")


def intermediate_ranks(fn, *args):
    """(op, rank) of every tensor the traced `fn(*args)` builds."""
    return [(op, len(shape)) for op, shape in intermediate_shapes(fn, *args)]
