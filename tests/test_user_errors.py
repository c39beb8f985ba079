"""User mistakes end in a `UserError` whose message says what, where and how to fix it, never a bare traceback.

One test per mistake found by the audit of every `fastpose` command (a truncated shard, a file where an output folder
goes, --device gpu, --iters 0, ...). Most call the stage function directly; a few run `fastpose.cli.main` in-process
to check what the user actually sees (exit status 2, the message intact).
"""

from __future__ import annotations

import errno
import json
import sys

import numpy as np
import pytest
import torch

from fastpose import bench, checkpoint, cli, config, demo, evaluate, pairwise, predict, shards, train
from fastpose.assembly import fit_assembly
from fastpose.convert import mat, synth
from fastpose.device import pick_device
from fastpose.errors import UserError, cause, out_file, out_folder
from fastpose.model import build_model, load_imagenet

K = 11  # the synthetic stick figures' joints


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 synthetic images converted into shards (9 train, 3 test), as a user's first `synth` + `convert mat`."""
    root = tmp_path_factory.mktemp("user_errors")
    mat_path = synth.make_dataset(root / "s", n=12, seed=0, sizes=(64, 80))
    mat.convert(mat_path, root / "shards", num_joints=K, split="train=0.75,test=0.25", workers=1, quiet=True)
    return root


def _cfg(data, **extra):
    values = dict(dataset=str(data / "shards"), net_type="resnet_18", num_joints=K, batch_size=2, num_workers=1,
                  device="cpu", precision="fp32", out_dir=str(data / "run"))
    values.update(extra)
    return config.load(None, **values)


@pytest.fixture(scope="module")
def snapshot(data):
    """A random-weight resnet_18 snapshot of the data's 11 joints (no training needed for error paths)."""
    torch.manual_seed(0)
    cfg = _cfg(data)
    return checkpoint.save_snapshot(data / "run", 1, model=build_model(cfg), optimizer=None, cfg=cfg,
                                    data_position={})


def _cli(monkeypatch, capsys, *args: str) -> str:
    """Run `fastpose ARGS` in-process; assert it exits 2 without a traceback; return what it printed to stderr."""
    monkeypatch.setattr(sys, "argv", ["fastpose", *args])
    monkeypatch.setenv("COLUMNS", "400")  # one paragraph on one line: phrases are not split by wrapping
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    return err


# ---- output paths (errors.out_folder / out_file) -------------------------------------------------------------


def test_out_folder_names_the_file_in_the_way(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match=r"--out .*f.txt/sub: .*f.txt is a file, not a folder.*Pass another --out"):
        out_folder(tmp_path / "f.txt" / "sub", "--out")
    assert out_folder(tmp_path / "a" / "b", "--out").is_dir()  # parents are created


def test_out_file_rejects_a_folder_and_creates_the_parent(tmp_path):
    with pytest.raises(UserError, match=r"--json .* is a folder, but a file name is expected.*such as .*/m.json"):
        out_file(tmp_path, "--json", "m.json")
    target = out_file(tmp_path / "new" / "m.json", "--json")
    assert target.parent.is_dir() and not target.exists()


def test_cause_keeps_the_first_sentence_only():
    e = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                     "internal miniz error. If you are seeing this error, ...")
    assert cause(e) == "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory."
    assert cause(ValueError("")) == "ValueError"


# ---- cli.main: the message is printed intact ------------------------------------------------------------------


def test_cli_prints_yaml_errors_without_eating_brackets(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    err = _cli(monkeypatch, capsys, "config", "show", str(bad))
    # rich markup used to swallow "[unclosed ... ]" of PyYAML's text; now one line with the position
    assert "is not valid YAML at line 2, column 1: expected ',' or ']'" in err
    assert "all_joints: [...]" in err


def test_cli_info_verify_reports_checksums_before_reading_a_damaged_shard(data, tmp_path, monkeypatch, capsys):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(data / "shards", damaged)
    shard = damaged / "train" / "shard-00000.h5"
    shard.write_bytes(shard.read_bytes()[:3000])
    err = _cli(monkeypatch, capsys, "info", str(damaged), "--verify")
    assert "checksum verification failed" in err and "shard-00000.h5: sha256 differs" in err


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_folder_is_not_called_missing(tmp_path):
    with pytest.raises(UserError, match=r"Config file .* is a folder\. Pass the path of a pose_cfg.yaml"):
        config.load(tmp_path)


def test_set_value_error_names_set_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 4\n")
    with pytest.raises(UserError, match=r"^--set: key 'batch_size' has value 'abc' .* must be int"):
        config.load(path, ["batch_size=abc"])
    with pytest.raises(UserError, match=r"--set multi_step: the value '\[\[0.1, 2' is not valid YAML at line 1, "
                                        r"column 9: .*Quote the whole option"):
        config.load(path, ["multi_step=[[0.1, 2"])


# ---- shards ---------------------------------------------------------------------------------------------------


def test_damaged_manifest(data, tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"manifest.json is not valid JSON .*Convert the dataset again"):
        shards.read_manifest(tmp_path)


def test_truncated_and_missing_shard(data, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data / "shards", root)
    shard = root / "test" / "shard-00000.h5"
    shard.write_bytes(shard.read_bytes()[:3000])
    ds = shards.ShardDataset(root, "test")
    with pytest.raises(UserError, match=r"shard-00000.h5 \(shard 0 of split 'test' of .*\) cannot be read as HDF5 "
                                        r"\(.*truncated.*--verify"):
        ds[0]
    shard.unlink()
    with pytest.raises(UserError, match=r"shard-00000.h5 \(shard 0 of split 'test' .*\) is missing"):
        shards.ShardDataset(root, "test")[1]


def test_shard_writer_checks_its_numbers_and_out_parent(tmp_path):
    with pytest.raises(UserError, match=r"--samples-per-shard 0: must be at least 1"):
        shards.ShardWriter(tmp_path / "a", 3, samples_per_shard=0)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"f is a file, not a folder"):
        shards.ShardWriter(tmp_path / "f" / "out", 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temp folder left behind


# ---- convert / synth / demo -----------------------------------------------------------------------------------


def test_convert_mat_negative_num_joints_and_folder(data, tmp_path):
    with pytest.raises(UserError, match=r"--num-joints -3: must be positive"):
        mat.convert(data / "s" / "dataset.mat", tmp_path / "o", num_joints=-3)
    with pytest.raises(UserError, match=r"is a folder\. Pass the path of your dataset.mat file itself"):
        mat.convert(tmp_path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_synth_rejects_bad_numbers_and_a_file_as_out(tmp_path):
    with pytest.raises(UserError, match=r"--n 0: the number of images must be positive"):
        synth.make_dataset(tmp_path / "s", n=0)
    with pytest.raises(UserError, match=r"--min-size 10 --max-size 80: need 32 <= min-size <= max-size"):
        synth.make_dataset(tmp_path / "s", n=2, sizes=(10, 80))
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"--out .*f/images: .*f is a file, not a folder"):
        synth.make_dataset(tmp_path / "f", n=2, sizes=(64, 80))
    assert not (tmp_path / "s").exists()  # an empty dataset.mat would be reused by the next demo run


def test_demo_rejects_zero_images(tmp_path):
    with pytest.raises(UserError, match=r"--n 0: the demo needs a positive number"):
        demo.run("configs/demo.yaml", tmp_path / "d", n=0)
    assert not (tmp_path / "d").exists()


# ---- train / checkpoint / init_weights ------------------------------------------------------------------------


def test_train_max_iters_must_be_positive(data):
    for bad in (0, -1):
        with pytest.raises(UserError, match=rf"--max-iters {bad}: must be at least 1"):
            train.train(_cfg(data), max_iters=bad, quiet=True)


def test_snapshot_folder_points_at_its_newest(snapshot, tmp_path):
    with pytest.raises(UserError, match=rf"Snapshot .* is a folder\. .*its newest, {snapshot}"):
        checkpoint.load_snapshot(snapshot.parent)
    with pytest.raises(UserError, match=r"is a folder\. .*holds none \(train first\)"):
        checkpoint.load_snapshot(tmp_path)


def test_truncated_snapshot_message_is_short(snapshot, tmp_path):
    bad = tmp_path / "snapshot-9.pt"
    bad.write_bytes(snapshot.read_bytes()[:1000])
    with pytest.raises(UserError) as info:
        checkpoint.load_snapshot(bad)
    msg = str(info.value)
    assert "could not be read (RuntimeError: PytorchStreamReader failed reading zip archive" in msg
    assert "it is corrupt or truncated" in msg and "high likelihood" not in msg  # torch's paragraph is cut


def test_imagenet_file_given_as_snapshot(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=r"resnet18.pth is not a fastpose training snapshot \(it lacks iteration, "
                                        r"model, .*\)\. Pass a snapshot-<iteration>.pt written by `fastpose train`; "
                                        r"an ImageNet .pth belongs in the config's init_weights"):
        checkpoint.load_snapshot(path)


def test_snapshot_write_failure_is_a_user_error_and_leaves_nothing(data, tmp_path, monkeypatch):
    def disk_full(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    cfg = _cfg(data)
    with pytest.raises(UserError, match=r"Could not write snapshot .*snapshot-7.pt at iteration 7 \(OSError: .*No "
                                        r"space left on device\); nothing partial was left.*--resume"):
        checkpoint.save_snapshot(tmp_path, 7, model=torch.nn.Linear(1, 1), optimizer=None, cfg=cfg,
                                 data_position={})
    assert list(tmp_path.iterdir()) == []


def test_init_weights_not_a_torch_file(data, tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("x\n")  # torch: "Weights only load failed. ... weights_only ... arbitrary code execution ..."
    model = build_model(_cfg(data))
    with pytest.raises(UserError) as info:
        load_imagenet(model, text)
    msg = str(info.value)
    assert "could not be read as a PyTorch weights file (UnpicklingError: Weights only load failed.)" in msg
    assert "weights_only" not in msg and "fastpose weights download" in msg  # not torch's advice to unpickle it
    with pytest.raises(UserError, match=r"init_weights: .* is a folder, not a file"):
        load_imagenet(model, tmp_path)


# ---- eval / predict -------------------------------------------------------------------------------------------


def test_device_names_are_checked():
    with pytest.raises(UserError, match=r"--device 'gpu' is not a device: use auto, cpu, cuda or cuda:N"):
        pick_device("gpu")
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"device cuda:1 was asked for, but torch .* sees no CUDA GPU"):
            pick_device("cuda:1")


def test_eval_numbers_checked_before_loading(tmp_path):
    missing = tmp_path / "nope.pt"  # never read: the numbers fail first
    with pytest.raises(UserError, match=r"--batch-size 0: must be at least 1"):
        evaluate.evaluate(None, missing, batch_size=0)
    with pytest.raises(UserError, match=r"--pck-threshold -1: must be positive"):
        evaluate.evaluate(None, missing, pck_threshold=-1)


def test_eval_snapshot_of_another_joint_count_names_the_tensors(data, snapshot):
    # Another joint count is caught when the config is bound to the snapshot (checkpoint.bind_snapshot_joints) ...
    with pytest.raises(UserError, match=r"The config sets num_joints = 14, but .*snapshot-1.pt was trained with "
                                        r"num_joints = 11"):
        checkpoint.load_model(snapshot, torch.device("cpu"), _cfg(data, num_joints=14))
    # ... another head by the weights that do not fit, naming the tensors.
    with pytest.raises(UserError, match=r"do not fit the network of the config \(net_type resnet_18, 11 joints, "
                                        r"location_refinement True\): 2 keys of the config's network the "
                                        r"snapshot lacks \(e.g. locref.deconv.bias\)"):
        checkpoint.load_model(snapshot, torch.device("cpu"), _cfg(data, location_refinement=True))


def test_eval_outputs_paths(tmp_path):
    result = {"predictions": np.zeros((1, 2, 3)), "source_predictions": np.zeros((1, 2, 3)),
              "config": config.load(None, num_joints=2), "metrics": {"samples": 1}}
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"--out .*f: .*f is a file, not a folder"):
        evaluate.write_outputs(result, tmp_path / "f")
    with pytest.raises(UserError, match=r"--json .* is a folder, but a file name is expected"):
        evaluate.write_outputs(result, tmp_path / "o", tmp_path)
    written = evaluate.write_outputs(result, tmp_path / "o", tmp_path / "new" / "m.json")  # parent is created
    assert json.loads(written[-1].read_text()) == {"samples": 1}


def test_eval_and_bench_check_their_output_paths_before_the_run(monkeypatch, capsys, tmp_path, snapshot):
    # A --json that is a folder, or an --out blocked by a file, fails at once, not after a long evaluation or bench.
    def never(*args, **kwargs):
        raise AssertionError("the run started although an output path is unusable")

    monkeypatch.setattr(evaluate, "evaluate", never)
    monkeypatch.setattr(bench, "run", never)
    (tmp_path / "f").write_text("x")
    err = _cli(monkeypatch, capsys, "eval", "--checkpoint", str(snapshot), "--json", str(tmp_path))
    assert "--json" in err and "is a folder, but a file name is expected" in err
    err = _cli(monkeypatch, capsys, "eval", "--checkpoint", str(snapshot), "--out", str(tmp_path / "f" / "o"))
    assert "is a file, not a folder" in err
    err = _cli(monkeypatch, capsys, "bench", "targets", "--json", str(tmp_path))
    assert "--json" in err and "is a folder, but a file name is expected" in err


def test_predict_says_which_input_failed_and_out_file(data, snapshot, tmp_path):
    good = data / "s" / "images" / "img00000.png"
    bad = tmp_path / "a.jpg"
    bad.write_text("not an image")
    with pytest.raises(UserError, match=r"a.jpg \(input 2 of 2; the outputs of the 1 before its batch are in .*\) "
                                        r"could not be decoded as an image"):
        predict.predict(snapshot, [str(good), str(bad)], tmp_path / "p", batch_size=1, device="cpu")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["img00000.json", "img00000.png"]
    with pytest.raises(UserError, match=r"--out .*a.jpg: .*a.jpg is a file, not a folder"):
        predict.predict(snapshot, [str(good)], bad, device="cpu")


def test_predict_skip_bad_skips_and_lists_unreadable_inputs(data, snapshot, tmp_path):
    good = data / "s" / "images" / "img00000.png"
    bad = tmp_path / "a.jpg"
    bad.write_text("not an image")
    with pytest.raises(UserError, match=r"could not be decoded as an image.*--skip-bad"):
        predict.predict(snapshot, [str(bad), str(good)], tmp_path / "p0", batch_size=2, device="cpu")
    skipped: list = []
    docs = predict.predict(snapshot, [str(bad), str(good)], tmp_path / "p", batch_size=2, device="cpu",
                           skip_bad=True, skipped=skipped)
    assert [d["image"] for d in docs] == [str(good)] and [s[0] for s in skipped] == [str(bad)]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["img00000.json", "img00000.png"]


def test_predict_out_of_memory_names_the_batch(data, snapshot, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(predict, "_forward", oom)
    good = str(data / "s" / "images" / "img00000.png")
    with pytest.raises(UserError, match=r"Out of GPU memory predicting .*img00000.png and the 0 images after it "
                                        r"\(batch size 4; .*Pass a smaller --batch-size"):
        predict.predict(snapshot, [good], tmp_path / "p", batch_size=4, device="cpu")


# ---- bench / pairwise / fit-assembly --------------------------------------------------------------------------


def test_bench_numbers_and_set_net_type(tmp_path):
    with pytest.raises(UserError, match=r"--iters 0 --warmup 2: need at least 1 timed run"):
        bench.run(["step"], iters=0)
    with pytest.raises(UserError, match=r"--iters 1 --warmup -1: "):
        bench.run(["step"], iters=1, warmup=-1)
    with pytest.raises(UserError, match=r"--size 0: the synthetic training-step images must be at least 32"):
        bench.run(["step"], size=0)
    # --set net_type used to be overridden by the resnet_50 default when no --config was given
    assert bench.load_config(None, ["net_type=resnet_18"], None, None, "cpu").net_type == "resnet_18"
    assert bench.load_config(None, None, None, None, "cpu").net_type == "resnet_50"
    with pytest.raises(UserError, match=r"--json .* is a folder"):
        bench.write_json({}, tmp_path)


def test_pairwise_stats_out_is_a_folder(tmp_path):
    k = np.zeros((2, 2, 2))
    with pytest.raises(UserError, match=r"pairwise_stats_fn \(or --out\) .* is a folder.*pairwise_stats.npz"):
        pairwise.save_stats(tmp_path, k, k + 1, np.zeros((2, 2)))


def test_fit_assembly_max_images(data, snapshot):
    with pytest.raises(UserError, match=r"--max-images 0: must be at least 1"):
        fit_assembly(_cfg(data), snapshot, max_images=0, device="cpu")


def test_coco_annotations_folder_is_explained(tmp_path):
    from fastpose.convert.coco import read_annotations

    (tmp_path / "person_keypoints_val2017.json").write_text("{}")
    with pytest.raises(UserError, match=r"is a folder, but a COCO keypoints json file is expected. It holds "
                                        r"person_keypoints_val2017.json"):
        read_annotations(tmp_path)
