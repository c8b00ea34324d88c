#!/usr/bin/env python3
"""The reference's RSNA splits, computed with pandas and scikit-learn as its preprocessing
script does (mgca/preprocess/rsna.py, `preprocess_rsna_data` and `prepare_detection_data`), on the real label file; records a SHA-256 of each split's
patient-id list (one id per line, in split order) and of each training subset's, so the Rust
tests check the splits patient for patient without shipping the file.

    python golden/python/splits/make_splits.py RSNA_LABELS.csv SIIM_RLE.csv CHEXPERT_TRAIN.csv

RSNA_LABELS.csv is `stage_2_train_labels.csv`, SIIM_RLE.csv is `train-rle.csv` (`cargo xtask
assets` unpacks both into ~/.cache/mgca-assets/labels/). Needs pandas, scikit-learn, numpy.
For SIIM, the split is over rows, and the training rows follow the segmentation dataset:
balanced with the global generator, then subset by image (seed 42, 0 for 10 %), the dataset
built twice so the second draws are used; negatives are recognised by the stripped value.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.model_selection import train_test_split


def digest(ids) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def per_patient(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)

    def create_bbox(row):
        if row["Target"] == 0:
            return 0
        x1, y1 = row["x"], row["y"]
        return [x1, y1, x1 + row["width"], y1 + row["height"]]

    df["bbox"] = df.apply(create_bbox, axis=1)
    df = df[["patientId", "bbox"]].groupby("patientId").agg(list).reset_index()
    df["bbox"] = df["bbox"].apply(lambda x: None if x == [0] else x)
    df["Target"] = df["bbox"].apply(lambda x: 0 if x is None else 1)
    return df


def main() -> None:
    df = per_patient(sys.argv[1])
    out = {"pandas": pd.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__, "patients": len(df)}
    # Classification: 30 % held out, halved, first half test.
    train, held = train_test_split(df, test_size=0.3, random_state=0)
    test, valid = train_test_split(held, test_size=0.5, random_state=0)
    cls = {"train": train, "valid": valid, "test": test}
    cls["train_1pct"] = train.sample(frac=0.01, random_state=42)
    cls["train_10pct"] = train.sample(frac=0.1, random_state=42)
    out["classification"] = {k: {"rows": len(v), "sha256": digest(v["patientId"])} for k, v in cls.items()}
    # Detection / segmentation: 2 x 5,337 held out; subsets by the global generator, drawn
    # twice after seeding 42 (the training set is built twice), the second draw used.
    train, held = train_test_split(df, test_size=5337 * 2, random_state=0)
    test, valid = train_test_split(held, test_size=0.5, random_state=0)
    det = {"train": train, "valid": valid, "test": test}
    ids = train["patientId"].to_numpy()
    for name, p in [("train_1pct", 0.01), ("train_10pct", 0.1)]:
        np.random.seed(42)
        n = len(ids)
        np.random.choice(n, int(p * n), replace=False)
        det[name] = train.iloc[np.random.choice(n, int(p * n), replace=False)]
    out["detection"] = {k: {"rows": len(v), "sha256": digest(v["patientId"])} for k, v in det.items()}
    (Path(__file__).parent / "rsna.json").write_text(json.dumps(out, indent=1) + "\n")
    siim(sys.argv[2])
    chexpert(sys.argv[3])


TASKS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
OTHERS = ["Enlarged Cardiomediastinum", "Lung Lesion", "Lung Opacity", "Pneumonia", "Pneumothorax",
          "Pleural Other", "Fracture", "Support Devices"]


def chexpert(path: str) -> None:
    """mgca/preprocess/chexpert.py (`preprocess_chexpert_data`), and the dataset's frontal
    filter and 1 % / 10 % pandas samples (`CheXpertImageDataset`)."""
    np.random.seed(0)
    df = pd.read_csv(path)
    filled = df.fillna(0)
    filled = filled[filled["Frontal/Lateral"] == "Frontal"]
    parts = []
    for task in TASKS:
        cond = filled[task] == 1
        for other in TASKS + OTHERS:
            if other != task:
                cond &= filled[other] == 0
        parts.append(filled[cond].sample(n=200, random_state=0))
    five = pd.concat(parts)
    rest = df[~df["Path"].isin(five["Path"])]
    valid_ids = np.random.permutation(len(rest))[:5000]
    valid = rest.iloc[valid_ids]
    train = rest.drop(valid_ids, errors="ignore")
    fixed_train = rest.drop(rest.index[valid_ids])
    out = {"rows": len(df)}
    for name, part in [("train", train), ("valid", valid), ("fixed_train", fixed_train)]:
        frontal = part[part["Frontal/Lateral"] == "Frontal"]
        out[name] = {"rows": len(frontal), "sha256": digest(frontal["Path"])}
    frontal = train[train["Frontal/Lateral"] == "Frontal"]
    for name, frac in [("train_1pct", 0.01), ("train_10pct", 0.1)]:
        sub = frontal.sample(frac=frac, random_state=42)
        out[name] = {"rows": len(sub), "sha256": digest(sub["Path"])}
    (Path(__file__).parent / "chexpert.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def siim_training(df: pd.DataFrame, frac: float, seed: int) -> pd.DataFrame:
    np.random.seed(seed)
    for _ in range(2):  # the training dataset is constructed twice
        d = df.copy()
        d["class"] = d[" EncodedPixels"].apply(lambda x: x.strip() != "-1")
        pos = d[d["class"]]
        pos_ids = pos["ImageId"].unique()
        neg_ids = d[~d["class"]]["ImageId"].unique()
        chosen = np.random.choice(neg_ids, len(pos_ids), replace=False)
        d = pd.concat([pos, d[(~d["class"]) & d["ImageId"].isin(chosen)]])
        if frac != 1:
            ids = d["ImageId"].unique()
            keep = np.random.choice(ids, int(len(ids) * frac), replace=False)
            d = d[d["ImageId"].isin(keep)]
        result = d
    return result


def siim(path: str) -> None:
    df = pd.read_csv(path)
    df.columns = ["ImageId", " EncodedPixels"]
    train, held = train_test_split(df, test_size=0.3, random_state=0)
    test, valid = train_test_split(held, test_size=0.5, random_state=0)
    parts = {"train": train, "valid": valid, "test": test,
             "train_1pct": siim_training(train, 0.01, 42), "train_10pct": siim_training(train, 0.1, 0),
             "train_balanced": siim_training(train, 1.0, 42)}
    out = {"rows": len(df), "splits": {k: {"rows": len(v), "sha256": digest(v["ImageId"])} for k, v in parts.items()}}
    (Path(__file__).parent / "siim.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
