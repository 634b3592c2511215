"""Call an nlpkit SavedModel with nothing but TensorFlow and tensorflow-text.

    python serve.py SAVED_MODEL TEXT [TEXT ...]

Prints one JSON line per text (label, probabilities by label name). This is all a server needs:
no nlpkit, no model code, no vocab file beside it (the tokenizer is inside the graph).
"""

import json
import sys

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph uses)


def main(saved_model, texts):
    served = tf.saved_model.load(saved_model)
    outputs = served.signatures["serving_default"](text=tf.constant(texts))
    labels = [label.decode() for label in outputs["label"].numpy()]
    # The class order of `probabilities` is recorded beside the graph by nlpkit export.
    with open(f"{saved_model}/assets.extra/nlpkit.json", encoding="utf-8") as handle:
        names = json.load(handle)["labels"]
    for text, label, probabilities in zip(texts, labels, outputs["probabilities"].numpy()):
        by_label = {name: round(float(p), 4) for name, p in zip(names, probabilities)}
        print(json.dumps({"text": text, "label": label, "probabilities": by_label}))
    assert not any(name.split(".")[0] == "nlpkit" for name in sys.modules), "nlpkit is not needed to serve"


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
