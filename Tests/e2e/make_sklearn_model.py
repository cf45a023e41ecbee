#!/usr/bin/env python3
"""Trains a small, deterministic scikit-learn classifier for the end-to-end pipeline tests.

    make_sklearn_model.py OUTDIR [--kind mlp|logistic] [--seed N]

Writes OUTDIR/model.pkl (plain pickle) and OUTDIR/sample_inputs.npy (float32, 16 rows, 8 features).
Synthetic data: 8 features, 3 classes; training takes well under 2 s on 2 cores.
"""
import argparse
import os
import pickle
import sys
import time
import warnings

import numpy as np

N_FEATURES = 8
N_CLASSES = 3
N_TRAIN = 600
N_SAMPLES = 16


def make_data(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=N_TRAIN)
    X = centers[y] + rng.normal(0.0, 1.5, size=(N_TRAIN, N_FEATURES))
    samples = centers[rng.integers(0, N_CLASSES, size=N_SAMPLES)] + rng.normal(0.0, 1.5, size=(N_SAMPLES, N_FEATURES))
    return X.astype(np.float32), y.astype(np.int64), samples.astype(np.float32)


def train(kind, seed):
    X, y, samples = make_data(seed)
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier
        model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=seed)
    elif kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(max_iter=500)
    else:
        raise SystemExit(f"unknown --kind {kind!r} (mlp or logistic)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning is irrelevant for a test model
        model.fit(X, y)
    return model, X, y, samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--kind", choices=["mlp", "logistic"], default="mlp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    model, X, y, samples = train(args.kind, args.seed)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "model.pkl"), "wb") as f:
        pickle.dump(model, f, protocol=4)
    np.save(os.path.join(args.outdir, "sample_inputs.npy"), samples)
    acc = float((model.predict(X) == y).mean())
    print(f"trained {args.kind} (seed {args.seed}) in {time.monotonic() - t0:.2f} s, train accuracy {acc:.3f}; "
          f"wrote {args.outdir}/model.pkl and {args.outdir}/sample_inputs.npy {samples.shape} float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
