"""Is a generated digit the class it was asked for? A classifier trained on real digits.

A logistic-regression classifier on scikit-learn's 8x8 digits (the embedded dataset's training
split) judges samples after they are resized back to 8x8. Its accuracy on the real test split is
reported beside its accuracy on samples, so the sample figure can be read against a ceiling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


def _to_8x8(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 1] -> float [N, 64] on the 0..16 scale of ``load_digits``."""
    out = []
    for img in images:
        small = Image.fromarray(img[..., 0]).resize((8, 8), Image.BILINEAR)
        out.append(np.asarray(small, np.float32) / 255.0 * 16.0)
    return np.stack(out).reshape(len(images), -1)


class DigitsClassifier:
    def __init__(self, train_images: np.ndarray, train_labels: np.ndarray):
        self.model = LogisticRegression(max_iter=2000)
        # One BLAS thread: the fit is tiny, and on a busy 2-core host BLAS threads spinning for
        # each other stretched it from 0.2 s to 11 s (``report`` fits one per held-out chunk).
        with threadpool_limits(limits=1, user_api="blas"):
            self.model.fit(_to_8x8(train_images), train_labels)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.model.predict(_to_8x8(images)) == labels))
