"""Preprocessing: text (xc, libsvm or vw) -> TFRecords, and the R label/feature lookups, each with a manifest.

Manifests record what shaped the outputs (source checksums, split, sizes, B, seeds) and the checksums of
what was written.  A re-run with the same inputs is a no-op; later steps refuse outputs whose manifest
disagrees with their config.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from mach import hashing
from mach.data.formats import (
    DataFormatError,
    count_rows,
    iter_rows,
    read_header,
    read_split,
    resolve_sizes,
    scan_sizes,
)
from mach.files import (
    read_json_checked,
    remove_dead_leftovers,
    replace_dir,
    save_npy_atomic,
    save_npz_atomic,
    sha256_file,
    write_json_atomic,
)
from mach.merge import check_inverse_lookups
from mach.progress import Progress
from mach.sizing import sized

MANIFEST = "manifest.json"
TFRECORD_FORMAT = 1  # bump when the writer changes, so older TFRecords are rewritten
LABEL_COUNTS = (
    "train_label_counts.npy"  # [K] int64: training rows per label, for propensity-scored metrics
)
LOOKUP_FORMAT = "murmurhash3_32(id, seed=hash_seed+r) % modulus, sklearn signed, floor modulo"


def _source_files(cfg) -> dict[str, Path]:
    if cfg.data_file is not None:
        if cfg.train_split_file is None or cfg.test_split_file is None:
            raise ValueError(
                "data_file needs train_split_file and test_split_file (the repository's *_trSplit.txt / *_tstSplit.txt)"
            )
        names = ["data_file", "train_split_file", "test_split_file"]
    elif cfg.train_file is not None and cfg.test_file is not None:
        names = ["train_file", "test_file"]
    else:
        raise ValueError(
            f"dataset {cfg.name!r} has no data files: pass --set train_file=PATH --set test_file=PATH, "
            "or --set data_file=PATH with train_split_file/test_split_file"
        )
    files = {name: cfg.resolve(getattr(cfg, name)) for name in names}
    for name, path in files.items():
        if path.is_dir():
            raise ValueError(
                f"{name} is a directory: {path}; expected a data file (--set {name}=PATH)"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{name} not found: {path} (set data_dir or --set {name}=PATH)")
    return files


def data_inputs(cfg, previous: dict | None = None, log=lambda _message: None) -> dict:
    """What determines the TFRecords: the source files' contents, the text format, split and sizes.

    Sizes come from the config, else from the xc header, else (libsvm, vw) from a scan of the files
    this run reads (largest id + 1; in tuning mode the test file is never read).  A scan recorded in
    `previous` (the inputs of the existing TFRecords) for the same files is reused, not repeated.
    """
    files = _source_files(cfg)
    inputs = {
        name: {"path": str(path), "sha256": sha256_file(path)} for name, path in files.items()
    }
    inputs.update(format=cfg.format, tfrecord_format=TFRECORD_FORMAT)
    if cfg.label_base or cfg.feature_base is not None:
        inputs["id_bases"] = list(cfg.id_bases())
    if cfg.valid_fraction > 0:
        inputs.update(valid_fraction=cfg.valid_fraction, valid_seed=cfg.valid_seed)
    if "data_file" in files:
        inputs["split"] = cfg.split
    first = files.get("data_file", files.get("train_file"))
    n_features, n_classes = cfg.n_features, cfg.n_classes
    if cfg.format != "xc" and None in (n_features, n_classes):
        previous = previous if isinstance(previous, dict) else {}
        scanned = previous.get("n_features"), previous.get("n_classes")
        unsized = {k: v for k, v in previous.items() if k not in ("n_features", "n_classes")}
        if (
            unsized == inputs
            and None not in scanned
            and cfg.n_features in (None, scanned[0])
            and cfg.n_classes in (None, scanned[1])
        ):
            found = scanned  # from the scan when the existing TFRecords were written
        else:
            read = [path for name, path in files.items() if name in ("data_file", "train_file")]
            read += [files["test_file"]] if "test_file" in files and cfg.valid_fraction == 0 else []
            found = scan_sizes(read, cfg.format, cfg.id_bases())
            log(
                f"sizes=scanned format={cfg.format} files={len(read)} n_features={found[0]} "
                f"n_classes={found[1]} (largest id + 1; the config's values take precedence)"
            )
        n_features = found[0] if n_features is None else n_features
        n_classes = found[1] if n_classes is None else n_classes
    header = read_header(first, cfg.format)
    n_features, n_classes = resolve_sizes(first, header, n_features, n_classes)
    inputs.update(n_features=n_features, n_classes=n_classes)
    return inputs


def _write_split_files(cfg, inputs, tmp_dir: Path, log) -> dict:
    """Stream the data file once, sending each row to the train or the test TFRecords (file order)."""
    from mach.data.tfrecords import (
        ShardedWriter,  # TensorFlow loads only when there is something to write
    )

    data_path = Path(inputs["data_file"]["path"])
    n_rows = count_rows(data_path, cfg.format)
    assignment = np.zeros(n_rows, dtype=np.int8)  # [N] 0 = unused, 1 = train, 2 = test
    for code, name in [(1, "train_split_file"), (2, "test_split_file")]:
        ids = read_split(Path(inputs[name]["path"]), cfg.split, n_rows)
        clash = ids[assignment[ids] != 0]
        if clash.size:
            raise DataFormatError(
                Path(inputs[name]["path"]),
                None,
                f"row {clash[0] + 1} is in both the train and the test split",
                "disjoint splits",
            )
        assignment[ids] = code
    if cfg.valid_fraction > 0:
        # Tuning mode: the real test rows stay unread; held-out training rows take their place.
        train, hold = assignment == 1, held_out(n_rows, cfg)
        assignment[:] = 0
        assignment[train & ~hold] = 1
        assignment[train & hold] = 2
    writers = {
        code: ShardedWriter(tmp_dir, name, cfg.rows_per_shard, inputs["n_classes"])
        for code, name in [(1, "train"), (2, "test")]
    }
    progress = Progress("tfrecords", log)
    rows = iter_rows(
        data_path, inputs["n_features"], inputs["n_classes"], cfg.format, cfg.id_bases()
    )
    for i, row in enumerate(rows):
        if assignment[i]:
            writers[assignment[i]].write(row.labels, row.feat_idx, row.feat_val)
        progress.tick()
    save_npy_atomic(tmp_dir / LABEL_COUNTS, writers[1].label_counts)
    return {"train": writers[1].close(), "test": writers[2].close()}


def _write_train_test_files(cfg, inputs, tmp_dir: Path, log) -> dict:
    from mach.data.tfrecords import (
        ShardedWriter,  # TensorFlow loads only when there is something to write
    )

    writers = {
        split: ShardedWriter(tmp_dir, split, cfg.rows_per_shard, inputs["n_classes"])
        for split in ["train", "test"]
    }
    # Tuning mode reads only the training file and sends the held-out rows to "test".
    for split in ["train"] if cfg.valid_fraction > 0 else ["train", "test"]:
        path = Path(inputs[f"{split}_file"]["path"])
        header = read_header(path, cfg.format)
        resolve_sizes(path, header, inputs["n_features"], inputs["n_classes"])  # files must agree
        progress = Progress(f"tfrecords_{split}", log)
        hold = held_out(count_rows(path, cfg.format), cfg) if cfg.valid_fraction > 0 else None
        rows = iter_rows(
            path, inputs["n_features"], inputs["n_classes"], cfg.format, cfg.id_bases()
        )
        for i, row in enumerate(rows):
            target = "test" if hold is not None and hold[i] else split
            writers[target].write(row.labels, row.feat_idx, row.feat_val)
            progress.tick()
    save_npy_atomic(tmp_dir / LABEL_COUNTS, writers["train"].label_counts)
    return {split: writer.close() for split, writer in writers.items()}


def held_out(n_rows: int, cfg) -> np.ndarray:
    """[n_rows] bool: the rows of the validation share, a fixed function of (row, valid_seed)."""
    return hashing.hash_range(n_rows, cfg.valid_seed, 1_000_000) < cfg.valid_fraction * 1_000_000


def prepare_tfrecords(cfg, log) -> dict:
    """Write train/test TFRecords unless an up-to-date copy exists.  Returns the data manifest."""
    out_dir = cfg.tfrecord_dir()
    manifest = _existing_manifest(out_dir, log)
    inputs = data_inputs(cfg, manifest and manifest.get("inputs"), log)
    write = _write_split_files if "data_file" in inputs else _write_train_test_files
    return _write_tfrecords(
        out_dir, manifest, inputs, lambda tmp: write(cfg, inputs, tmp, log), log
    )


def prepare_array_tfrecords(cfg, splits: dict, log, out_dir: Path | None = None) -> dict:
    """TFRecords of array rows (the Python API) in out_dir (default: cfg.tfrecord_dir()), unless an
    up-to-date copy exists. splits: {"train"/"test": (X CSR [n, D] float32, labels list, sha256)};
    a split left out is written empty. Returns the data manifest, whose inputs are the checksums."""
    from mach.data.tfrecords import ShardedWriter  # TensorFlow loads only when writing

    out_dir = cfg.tfrecord_dir() if out_dir is None else out_dir
    X = next(iter(splits.values()))[0]
    inputs = {f"{split}_arrays": {"sha256": part[2]} for split, part in splits.items()}
    inputs.update(
        format="arrays",
        tfrecord_format=TFRECORD_FORMAT,
        n_features=X.shape[1],
        n_classes=cfg.n_classes,
    )

    def write(tmp_dir: Path) -> dict:
        writers = {
            split: ShardedWriter(tmp_dir, split, cfg.rows_per_shard, cfg.n_classes)
            for split in ["train", "test"]
        }
        for split, (X, labels, _) in splits.items():
            progress = Progress(f"tfrecords_{split}", log)
            for i, row_labels in enumerate(labels):
                a, b = X.indptr[i], X.indptr[i + 1]
                writers[split].write(row_labels, X.indices[a:b], X.data[a:b])
                progress.tick()
        save_npy_atomic(tmp_dir / LABEL_COUNTS, writers["train"].label_counts)
        return {split: writer.close() for split, writer in writers.items()}

    return _write_tfrecords(out_dir, _existing_manifest(out_dir, log), inputs, write, log)


def _existing_manifest(out_dir: Path, log) -> dict | None:
    """The manifest of the TFRecords in out_dir, None when there are none (or it is damaged)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_dead_leftovers(out_dir.parent):
        log(f"removed={leftover} (left by a process that died while writing)")
    manifest_path = out_dir / MANIFEST
    try:
        return read_json_checked(manifest_path, "") if manifest_path.exists() else None
    except ValueError:
        log(f"tfrecords=damaged_manifest file={manifest_path}: rewriting the TFRecords")
        return None


def _write_tfrecords(out_dir: Path, manifest: dict | None, inputs: dict, write, log) -> dict:
    """The manifest of up-to-date TFRecords in out_dir, else write(tmp_dir) -> splits into a
    temporary directory that replaces out_dir only once complete."""
    if manifest is not None:
        damaged = damaged_shards(out_dir, manifest)
        if manifest.get("inputs") == inputs and not damaged:
            log(f"tfrecords=up_to_date dir={out_dir}")
            return manifest
        if manifest.get("inputs") != inputs:
            log(
                f"tfrecords=stale dir={out_dir} (the source data or its settings changed): rewriting"
            )
        else:
            names = ",".join(p.name for p in damaged)
            log(f"tfrecords=damaged files={names} dir={out_dir}: rewriting")
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp_dir.mkdir()
    try:
        splits = write(tmp_dir)
        for split in splits.values():
            split["sizes"] = {name: (tmp_dir / name).stat().st_size for name in split["shards"]}
            split["sha256"] = {name: sha256_file(tmp_dir / name) for name in split["shards"]}
        manifest = {
            "inputs": inputs,
            **splits,
            "label_counts_sha256": sha256_file(tmp_dir / LABEL_COUNTS),
        }
        write_json_atomic(tmp_dir / MANIFEST, manifest)
        replace_dir(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def damaged_shards(out_dir: Path, manifest: dict) -> list[Path]:
    """The shards (and label counts) that are missing or differ from the checksums preprocess recorded."""
    damaged = [
        out_dir / name
        for split in ["train", "test"]
        for name in manifest.get(split, {}).get("shards", [""])
        if not (out_dir / name).is_file()
        or sha256_file(out_dir / name) != manifest[split].get("sha256", {}).get(name)
    ]
    counts = out_dir / LABEL_COUNTS
    if not counts.is_file() or sha256_file(counts) != manifest.get("label_counts_sha256"):
        damaged.append(counts)
    return damaged


def load_label_counts(cfg, data_manifest: dict) -> np.ndarray:
    """[K] int64 training rows per label, checked against the checksum preprocess recorded."""
    path = cfg.tfrecord_dir() / LABEL_COUNTS
    if not path.is_file() or sha256_file(path) != data_manifest.get("label_counts_sha256"):
        raise ValueError(
            f"{path} is missing or does not match its checksum in {cfg.tfrecord_dir() / MANIFEST}; "
            f"run `python preprocess.py --dataset {cfg.name}` with the same --set options (it rewrites it)"
        )
    return np.load(path)


def load_data_manifest(cfg) -> dict:
    path = cfg.tfrecord_dir() / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"no TFRecords at {cfg.tfrecord_dir()}; run `python preprocess.py --dataset {cfg.name}` first"
        )
    return read_json_checked(
        path,
        f"run `python preprocess.py --dataset {cfg.name}` with the same options (it rewrites it)",
    )


def with_data_sizes(cfg, data_manifest: dict):
    """The config with n_features/n_classes filled from the data, and the sizes it leaves open chosen
    from it (mach.sizing); a disagreement with the configured sizes means stale outputs."""
    for name in ["n_features", "n_classes"]:
        configured, found = getattr(cfg, name), data_manifest["inputs"][name]
        if configured is not None and configured != found:
            raise ValueError(
                f"{cfg.tfrecord_dir()} was built with {name}={found} but the config says {configured}; "
                f"re-run `python preprocess.py` with this config"
            )
    cfg = dataclasses.replace(
        cfg,
        n_features=data_manifest["inputs"]["n_features"],
        n_classes=data_manifest["inputs"]["n_classes"],
    )
    # B, R and the epochs a config leaves open are chosen from the data.
    return sized(cfg, data_manifest["train"]["rows"])


def lookup_identity(cfg) -> dict:
    """The config values that determine the lookups (R only says how many exist)."""
    return {
        "B": cfg.B,
        "hash_seed": cfg.hash_seed,
        "n_classes": cfg.n_classes,
        "n_features": cfg.n_features,
        "feat_hash_dim": cfg.feat_hash_dim,
        "hash": LOOKUP_FORMAT,
    }


def _lookup_arrays(cfg, r: int) -> dict[Path, dict[str, np.ndarray]]:
    seed = cfg.hash_seed_for(r)
    label_to_bucket = hashing.build_label_lookup(cfg.n_classes, cfg.B, seed)  # [K] int32
    bucket_offsets, bucket_labels = hashing.invert_lookup(label_to_bucket, cfg.B)
    arrays = {
        cfg.label_lookup_path(r): {"label_to_bucket": label_to_bucket},
        cfg.inverse_lookup_path(r): {
            "bucket_offsets": bucket_offsets,
            "bucket_labels": bucket_labels,
        },
    }
    if cfg.feat_hash_dim is not None:
        arrays[cfg.feature_lookup_path(r)] = {
            "feature_to_slot": hashing.build_feature_lookup(cfg.n_features, cfg.feat_hash_dim, seed)
        }
    return arrays


def _read_lookup_manifest(cfg) -> dict | None:
    path = cfg.lookup_dir() / MANIFEST
    if not path.exists():
        return None
    manifest = read_json_checked(
        path, f"remove {cfg.lookup_dir()} and run `python preprocess.py --dataset {cfg.name}` again"
    )
    built, wanted = manifest.get("identity") or {}, lookup_identity(cfg)
    if built != wanted:
        changed = ", ".join(
            f"{key} {built.get(key)!r} -> {value!r}"
            for key, value in wanted.items()
            if built.get(key) != value
        )
        raise ValueError(
            f"the lookups in {cfg.lookup_dir()} were built for other data ({changed}): the dataset "
            f"changed under the name {cfg.name!r}, and the models in {cfg.hashing_dir()} belong to the "
            "old data. Preprocess the new data under another name (--dataset NEW_NAME), or move "
            f"{cfg.hashing_dir()} elsewhere (it keeps those models) and run again"
        )
    return manifest


def _lookup_intact(cfg, manifest: dict, name: str) -> bool:
    path = cfg.lookup_dir() / name
    return (
        name in manifest["files"]
        and path.is_file()
        and sha256_file(path) == manifest["files"][name]
    )


def prepare_lookups(cfg, log) -> dict:
    """Write the lookups of repetitions 0..R-1 that are missing or fail their checksum.

    Returns the lookup manifest.  Lookups are a function of (K, D, B, seed), so a damaged one is rebuilt
    byte for byte: the label lookup's checksum, which trained models record, stays valid.
    """
    manifest_path = cfg.lookup_dir() / MANIFEST
    remove_dead_leftovers(cfg.lookup_dir())
    manifest = _read_lookup_manifest(cfg) or {"identity": lookup_identity(cfg), "files": {}}
    written = repaired = 0
    for r in range(cfg.R):
        names = [p.name for p in _lookup_paths(cfg, r)]
        broken = [
            n for n in names if n in manifest["files"] and not _lookup_intact(cfg, manifest, n)
        ]
        if not broken and all(_lookup_intact(cfg, manifest, n) for n in names):
            continue
        for name in broken:
            log(f"lookup=damaged file={cfg.lookup_dir() / name}: rebuilding it")
        for path, arrays in _lookup_arrays(cfg, r).items():
            if path.suffix == ".npy":
                save_npy_atomic(path, next(iter(arrays.values())))
            else:
                save_npz_atomic(path, **arrays)
            manifest["files"][path.name] = sha256_file(path)
        written += 1
        repaired += bool(broken)
        # The manifest follows each repetition, so an interrupted run keeps what it finished.
        write_json_atomic(manifest_path, manifest)
    log(
        f"lookups=written repetitions={written} up_to_date={cfg.R - written} repaired={repaired} "
        f"dir={cfg.lookup_dir()}"
    )
    return manifest


def load_inverse_lookup(cfg, r: int) -> tuple[np.ndarray, np.ndarray]:
    """bucket_offsets [B+1] int64 and bucket_labels [K] int64 of repetition r, checked like the lookups."""
    fix = f"run `python preprocess.py --dataset {cfg.name}` with the same --set options (it rebuilds it)"
    manifest = _read_lookup_manifest(cfg)
    path = cfg.inverse_lookup_path(r)
    if manifest is None or path.name not in manifest["files"] or not path.is_file():
        raise FileNotFoundError(f"no inverse lookup for r={r} at {path}; {fix}")
    if sha256_file(path) != manifest["files"][path.name]:
        raise ValueError(
            f"{path} does not match its checksum in {cfg.lookup_dir() / MANIFEST}; {fix}"
        )
    with np.load(path) as saved:
        return saved["bucket_offsets"], saved["bucket_labels"]


def _lookup_paths(cfg, r: int) -> list[Path]:
    paths = [cfg.label_lookup_path(r), cfg.inverse_lookup_path(r)]
    return paths + ([cfg.feature_lookup_path(r)] if cfg.feat_hash_dim is not None else [])


def load_lookups(cfg, r: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """label_to_bucket [K] int32, feature_to_slot [D] int32 or None, and the label lookup's sha256.

    Refuses lookups missing, built for another config, or changed on disk since preprocessing.
    """
    fix = f"run `python preprocess.py --dataset {cfg.name}` with the same --set options (it rebuilds it)"
    manifest = _read_lookup_manifest(cfg)
    manifest_path = cfg.lookup_dir() / MANIFEST
    if manifest is None:
        raise FileNotFoundError(f"no lookups at {cfg.lookup_dir()}; {fix}")
    loaded = []
    for path in [
        cfg.label_lookup_path(r),
        cfg.feature_lookup_path(r) if cfg.feat_hash_dim is not None else None,
    ]:
        if path is None:
            loaded.append(None)
            continue
        if path.name not in manifest["files"] or not path.is_file():
            raise FileNotFoundError(f"no lookup for r={r} at {path}; {fix} (R must cover r={r})")
        if sha256_file(path) != manifest["files"][path.name]:
            raise ValueError(
                f"{path} does not match its checksum in {manifest_path}: it changed after preprocessing; {fix}"
            )
        loaded.append(np.load(path))
    return loaded[0], loaded[1], manifest["files"][cfg.label_lookup_path(r).name]


def load_inverse_lookups(cfg, label_to_bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bucket_offsets [R, B+1] int64 and bucket_labels [R, K] int64 saved by preprocess, checked against
    label_to_bucket [R, K] (the candidate kernel trusts them)."""
    offsets, labels = zip(*(load_inverse_lookup(cfg, r) for r in range(len(label_to_bucket))))
    bucket_offsets, bucket_labels = np.stack(offsets), np.stack(labels)
    check_inverse_lookups(label_to_bucket, bucket_offsets, bucket_labels)
    return bucket_offsets, bucket_labels
