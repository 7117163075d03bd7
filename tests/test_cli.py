import argparse

import pytest

import config
from mach.cli import add_config_flags, apply_overrides, config_from_args


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv), config.BASE, config.DATASETS)


def test_overrides_are_typed():
    cfg = apply_overrides(
        config.DATASETS["delicious"],
        ["B=128", "hidden=(256, 128)", "loss=bce", "lr=1", "feat_hash_dim=None"],
    )
    assert (cfg.B, cfg.hidden, cfg.loss, cfg.lr, cfg.feat_hash_dim) == (
        128,
        (256, 128),
        "bce",
        1.0,
        None,
    )
    assert apply_overrides(cfg, ["hidden=512"]).hidden == (512,)
    assert apply_overrides(cfg, ["feat_hash_dim=1000"]).feat_hash_dim == 1000


@pytest.mark.parametrize(
    "pair, message",
    [
        ("Bee=3", "--set Bee: unknown key; valid keys: B, R,"),
        ("B=3.5", "--set B=3.5: expected a value of type"),
        ("B=true", "expected a value of type"),
        ("hidden=(1.5,)", "expected a value of type"),
        ("loss=hinge", "loss='hinge': expected one of softmax, bce"),
        ("B", "expected KEY=VALUE"),
        ("epochs=0", "epochs=0: expected None (chosen from the rows) or at least 1"),
    ],
)
def test_bad_overrides_are_errors_that_list_the_keys(pair, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(config.BASE, [pair])


def test_presets_and_flags():
    cfg = parse("--dataset", "amazon3m", "--set", "R=4", "--work-dir", "/tmp/w")
    assert (cfg.B, cfg.feat_hash_dim, cfg.hidden, cfg.batch_size, cfg.epochs, cfg.R) == (
        10_000,
        100_000,
        (4096,),
        2000,
        10,
        4,
    )
    assert cfg.work_dir == "/tmp/w" and str(cfg.run_dir()).startswith("/tmp/w/amazon3m/")
    assert (
        config.DATASETS["amazon670k"].n_classes == 670_091
        and config.DATASETS["wiki10_31k"].n_features == 101_938
    )


def test_a_new_dataset_runs_from_flags_alone():
    cfg = parse(
        "--dataset", "mine", "--set", "train_file='/d/tr.txt'", "--set", "test_file=/d/ts.txt"
    )
    assert cfg.name == "mine" and cfg.train_file == "/d/tr.txt" and cfg.test_file == "/d/ts.txt"
    with pytest.raises(ValueError, match="unknown dataset 'mine': presets are amazon3m"):
        parse("--dataset", "mine")


def test_paths_are_derived():
    cfg = config.DATASETS["delicious"]
    assert cfg.label_lookup_path(3).name == "label_r03.npy" and cfg.ckpt_dir(3).name == "r03"
    assert cfg.resolve(cfg.data_file).is_file()  # the bundled data, found from any directory
