"""Linear probes: is an attribute linearly decodable from frozen features?

Used to check the stand-in encoders (issue: encoders must carry the study's information)
and for the paper's Fig 7 probe on understanding-adapter outputs.
"""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
from uvlm.data.faces import answer as face_answer
from uvlm.data.smartwatch import POSITIONS, WEATHERS
from uvlm.eval.vqa import aggregate, score_answer, true_answer

# What a probe predicts for each attribute: integer classes.
PROBE_TARGETS = ("hour", "minute", "second", "weather", "weather_pos", "battery", "battery_pos")


def attribute_labels(attributes: list[dict]) -> dict[str, np.ndarray]:
    """Integer class labels for every probe target from attribute dicts."""
    if attributes and "Male" in attributes[0]:  # CelebA: one yes/no target per attribute
        return {a: np.array([int(x[a]) for x in attributes]) for a in FACE_ATTRIBUTES}
    index = {"weather": WEATHERS, "weather_pos": POSITIONS, "battery_pos": POSITIONS}
    labels = {}
    for key in PROBE_TARGETS:
        values = [a[key] for a in attributes]
        labels[key] = np.array([index[key].index(v) for v in values] if key in index
                               else [v % 12 if key == "hour" else v for v in values])
    return labels


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0, max_iter: int = 300):
    """A standardised multinomial logistic regression on flattened features (a train split with
    one class, as small held-out sets can have, predicts that class)."""
    if len(np.unique(y_train)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(x_train.reshape(len(x_train), -1), y_train)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0, random_state=seed))
    return clf.fit(x_train.reshape(len(x_train), -1), y_train)


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 seed: int = 0) -> tuple[float, np.ndarray]:
    """Test accuracy (percent) and test predictions of a probe trained on the train split."""
    pred = fit_probe(x_train, y_train, seed).predict(x_test.reshape(len(x_test), -1))
    return 100.0 * float((pred == y_test).mean()), pred


def probe_attributes(x_train: np.ndarray, attrs_train: list[dict], x_test: np.ndarray,
                     attrs_test: list[dict], seed: int = 0) -> dict:
    """Per-attribute probe accuracy (exact class, percent), plus the VQA scores of the
    probe's answers (partial credit for time and battery, as in the paper's tables)."""
    ytr, yte = attribute_labels(attrs_train), attribute_labels(attrs_test)
    acc, preds = {}, {}
    for key in ytr:
        acc[key], preds[key] = linear_probe(x_train, ytr[key], x_test, yte[key], seed)
    return {"accuracy": acc, "vqa": score_against(answers_from_classes(preds), attrs_test)}


def answers_from_classes(classes: dict[str, np.ndarray]) -> list[dict[str, str]]:
    """Per image, the VQA answers spelled as the model would (hour class 0 reads 12; a CelebA
    class 1 is the attribute's value 1)."""
    if set(classes) == set(FACE_ATTRIBUTES):
        n = len(classes["Male"])
        return [{a: face_answer(a, bool(classes[a][i])) for a in FACE_ATTRIBUTES} for i in range(n)]
    n = len(classes["hour"])
    return [{
        "time": f"{int(classes['hour'][i]) or 12:02d}:{int(classes['minute'][i]):02d}:"
                f"{int(classes['second'][i]):02d}",
        "weather": WEATHERS[int(classes["weather"][i])],
        "weather_pos": POSITIONS[int(classes["weather_pos"][i])],
        "battery": f"{int(classes['battery'][i])}%",
        "battery_pos": POSITIONS[int(classes["battery_pos"][i])],
    } for i in range(n)]


def score_against(answers: list[dict[str, str]], attributes: list[dict],
                  named: list[list[str]] | None = None) -> dict:
    """VQA-rule scores of judged answers; only the attributes each prompt named, if given."""
    scored = []
    for i, (ans, a) in enumerate(zip(answers, attributes, strict=True)):
        keys = named[i] if named is not None else list(ans)
        scored += [(k, score_answer(k, true_answer(a, k), ans[k])) for k in keys]
    return aggregate(scored)
