"""Ensemble STDP end to end on the digits set with 2 shards on a local 2-CPU Ray: the run
directory, ``ensemble.json``, eval and plot; a worker killed mid-run is retried and resumes from
its checkpoint; a sub-model that keeps failing stops the run with one line, and ``--resume``
finishes it."""

import contextlib
import io
import json

import numpy as np
import pytest
import tomli_w

from spikeforge import cli
from spikeforge.ensemble import EnsembleError, compress, equal_shards, removal_priority
from spikeforge.run import ensemble as trainer
from spikeforge.run.checkpoint import load_checkpoint
from spikeforge.run.config import config_from_dict
from spikeforge.run.diehl_cook import train_diehl_cook

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RAW = {
    "method": "ensemble",
    "seed": 1,
    "data": {"name": "digits", "limit": 400, "test_limit": 200},
    "train": {"epochs": 1, "threads": 1, "progress": False},
    "diehl_cook": {
        "rule": "pair",
        "present_ms": 300.0,
        "rest_ms": 20.0,
        "norm_total": 12.0,
        "label_images": 150,
        "log_every": 50,
    },  # fmt: skip
    "ensemble": {
        "submodels": [10, 10],
        "target_neurons": 12,
        "metrics": ["mse", "manhattan", "cosine", "correlation"],
        "genetic": True,
        "genetic_population": 10,
        "genetic_generations": 10,
        "validation_images": 100,
        "path_points": 6,
        "remove": "higher-threshold",
    },  # fmt: skip
}
# The fault-injection runs only need a complete pipeline, not accuracy: shorter and one metric.
QUICK = {
    **RAW,
    "data": {"name": "digits", "limit": 400, "test_limit": 40},
    "diehl_cook": {**RAW["diehl_cook"], "present_ms": 100.0, "label_images": 40},
    "ensemble": {"submodels": [10, 10], "target_neurons": 12, "metrics": ["mse"]},
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local 2-CPU Ray for the module (the trainer uses a running Ray and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``spikeforge train`` of the digits ensemble: (run directory, summary, stdout)."""
    folder = tmp_path_factory.mktemp("ensemble")
    config_path = folder / "ensemble-digits.toml"
    config_path.write_text(tomli_w.dumps(RAW))
    out = folder / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["train", str(config_path), "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text()), stdout.getvalue()


def test_run_directory_and_report(trained):
    out, summary, stdout = trained
    for name in ("config.toml", "metrics.jsonl", "checkpoint.safetensors", "ensemble.json"):
        assert (out / name).is_file()
    report = json.loads((out / "ensemble.json").read_text())
    assert [s["shard_images"] for s in report["submodels"]] == [200, 200]
    assert sum(np.array(s["shard_classes"]) for s in report["submodels"]).sum() == 400
    for k, sub in enumerate(report["submodels"]):
        assert sub["train_samples"] == 200 and sub["train_seconds"] > 0
        assert len(sub["attempts"]) == 1 and sub["attempts"][0]["resumed_from_images"] == 0
        assert 0 <= sub["test_accuracy"] <= 1 and sub["label_images"] == 150
        assert (out / "submodels" / str(k) / "checkpoint.safetensors").is_file()
    assert report["merged"]["neurons"] == 20 and report["validation_images"] == 100
    assert (report["remove"], report["learning_rate_scale"]) == ("higher-threshold", 1.0)
    assert report["merged"]["test_accuracy"] > 0.3  # chance is 0.1
    assert set(report["compressed"]) == {"mse", "manhattan", "cosine", "correlation", "genetic"}
    for name, entry in report["compressed"].items():
        assert entry["neurons"] == 12 and entry["test_accuracy"] > 0.2, name
        assert entry["merge_seconds" if name != "genetic" else "search_seconds"] > 0
    genetic = report["compressed"]["genetic"]
    assert len(genetic["best_history"]) == 11 and np.all(np.diff(genetic["best_history"]) >= 0)
    for metric, curve in report["paths"].items():
        assert curve["removed"] == [0, 4, 8, 11, 15, 19], metric
        # no neuron removed: the estimate is the merged network's own accuracy
        assert curve["estimated_test_accuracy"][0] == report["merged"]["test_accuracy"]
    assert summary["final_network"] == "mse" and summary["neurons"] == 12
    assert summary["test_accuracy"] == report["compressed"]["mse"]["test_accuracy"]
    assert summary["train_samples"] == 400
    assert summary["train_seconds"] == pytest.approx(
        report["submodels_wall_seconds"] + report["merged"]["concatenate_seconds"]
        + report["compressed"]["mse"]["merge_seconds"]
    )  # fmt: skip
    assert f"test accuracy {summary['test_accuracy']:.4f}" in stdout
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["stage"] == "submodels"
    assert {ln["network"] for ln in lines[1:]} == {*report["compressed"], "merged",
                                                   "submodel-0", "submodel-1"}  # fmt: skip


def test_checkpoint_holds_the_merged_network_and_each_choice(trained):
    out, _, _ = trained
    tensors, meta = load_checkpoint(out)
    assert meta["complete"] and meta["headline"] == "mse"
    subs = [load_checkpoint(out / "submodels" / str(k))[0]["weights"].numpy() for k in (0, 1)]
    merged = tensors["merged.weights"].numpy()
    np.testing.assert_array_equal(merged, np.concatenate(subs, axis=1))
    thetas = [load_checkpoint(out / "submodels" / str(k))[0]["state.theta"].numpy() for k in (0, 1)]
    theta = tensors["merged.theta"].numpy()
    np.testing.assert_array_equal(theta, np.concatenate(thetas))
    priority = removal_priority("higher-threshold", theta)  # RAW's ensemble.remove
    for metric in ("mse", "manhattan", "cosine", "correlation"):
        np.testing.assert_array_equal(
            tensors[f"keep.{metric}"].numpy(), compress(merged, metric, 12, priority=priority).keep
        )
    assert np.unique(tensors["keep.genetic"].numpy()).size == 12


def test_eval_and_plot(trained):
    out, summary, _ = trained
    report = json.loads((out / "ensemble.json").read_text())
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["eval", str(out)]) == 0
    again = json.loads(stdout.getvalue())
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert again["networks"]["merged"]["test_accuracy"] == report["merged"]["test_accuracy"]
    for name, entry in report["compressed"].items():
        assert again["networks"][name]["test_accuracy"] == entry["test_accuracy"], name
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert cli.main(["plot", str(out)]) == 0
    names = sorted(line.rsplit("/", 1)[-1] for line in printed.getvalue().split())
    assert names == ["compression.png", "confusion.png", "receptive_fields.png"]
    assert (out / "compression.png").read_bytes()[:4] == b"\x89PNG"


def test_passes_run_as_separate_tasks_score_as_one_evaluation(trained, tmp_path):
    """The trainer runs a network's label, test and validation passes as separate Ray tasks;
    scored together they equal one in-process evaluation, counts included."""
    out, _, _ = trained
    config = config_from_dict(RAW)
    tensors, _ = load_checkpoint(out)
    weights, theta = tensors["merged.weights"].numpy(), tensors["merged.theta"].numpy()
    data = trainer._load(config)
    label = np.arange(data.pool)[-RAW["diehl_cook"]["label_images"] :]
    networks = {"merged": (weights, theta, label)}
    split = trainer._evaluate(config, data, tmp_path, networks, "merged")["merged"]
    whole = trainer.evaluate_network_task(
        config, weights, theta, label, True, True, str(tmp_path / "whole.json")
    )
    assert sorted(split["counts"]) == sorted(whole["counts"]) == ["label", "test", "validation"]
    for which in whole["counts"]:
        np.testing.assert_array_equal(split["counts"][which], whole["counts"][which])
    for key in ("test_accuracy", "test_accuracy_proportion", "assignments", "confusion"):
        assert split[key] == whole[key], key
    report = json.loads((out / "ensemble.json").read_text())
    assert split["test_accuracy"] == report["merged"]["test_accuracy"]
    assert sorted(p.name for p in (tmp_path / "evaluation").iterdir()) == [
        f"merged.{which}.progress.json" for which in ("label", "test", "validation")
    ]


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(trainer.KILL_HOOK_VARIABLE, "0:130")  # checkpoints at 50, 100, ...
    config = config_from_dict(QUICK)
    summary = trainer.train_ensemble(config, tmp_path / "run", log=lambda *_: None)
    report = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    first, second = report["submodels"][0]["attempts"]
    assert second["resumed_from_images"] == 100 and first["pid"] != second["pid"]
    assert len(report["submodels"][1]["attempts"]) == 1
    assert report["submodels"][0]["train_samples"] == 200
    assert summary["merged_neurons"] == 20 and report["compressed"]["mse"]["neurons"] == 12
    # the resumed sub-model equals one trained without interruption
    monkeypatch.delenv(trainer.KILL_HOOK_VARIABLE)
    shard = equal_shards(400, 2, config.seed)[0]
    train_diehl_cook(
        trainer.submodel_config(config, 0), tmp_path / "straight", log=lambda *_: None,
        train_indices=shard, evaluate=False,
    )  # fmt: skip
    resumed = load_checkpoint(tmp_path / "run" / "submodels" / "0")[0]
    straight = load_checkpoint(tmp_path / "straight")[0]
    np.testing.assert_array_equal(resumed["weights"].numpy(), straight["weights"].numpy())
    np.testing.assert_array_equal(resumed["state.theta"].numpy(), straight["state.theta"].numpy())


def test_a_sub_model_that_keeps_dying_stops_the_run_then_resume_finishes_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(trainer.KILL_HOOK_VARIABLE, "1:70:99")  # dies in every attempt
    config_path = tmp_path / "quick.toml"
    config_path.write_text(tomli_w.dumps({**QUICK, "ensemble": {**QUICK["ensemble"],
                                                                "max_retries": 1}}))  # fmt: skip
    out = tmp_path / "run"
    assert cli.main(["train", str(config_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikeforge: error: sub-model 1 failed: ")
    assert "died 2 times" in err[0] and "--resume" in err[0]
    assert not (out / "ensemble.json").exists()  # never a smaller ensemble
    monkeypatch.delenv(trainer.KILL_HOOK_VARIABLE)
    assert cli.main(["train", str(config_path), "--out", str(out), "--resume"]) == 0
    report = json.loads((out / "ensemble.json").read_text())
    attempts = report["submodels"][1]["attempts"]
    assert len(attempts) == 3 and attempts[-1]["resumed_from_images"] == 50
    assert report["submodels"][1]["train_samples"] == 200
    assert report["merged"]["neurons"] == 20


def test_errors_raise_ensemble_error_not_a_partial_model(tmp_path):
    """A Python exception inside a task is not retried; the run stops with its message."""
    config = config_from_dict(QUICK)
    shard = np.array([10**6])  # an index past the data: the task raises IndexError
    from spikeforge.ensemble.distributed import Job, run_tasks

    job = Job("sub-model 0", trainer.train_submodel_task,
              (trainer.submodel_config(config, 0), str(tmp_path / "s"), shard, None))  # fmt: skip
    with pytest.raises(EnsembleError, match=r"sub-model 0 failed: IndexError: ") as info:
        run_tasks([job], show_progress=False)
    assert "\n" not in str(info.value)


def test_class_skewed_shards_each_shown_as_many_images_as_the_largest(tmp_path):
    """Dirichlet shards of unequal size with ``presentations = "largest-shard"``: every
    sub-model is trained on as many images as the largest shard holds, drawn from its own shard;
    the report records the setting."""
    skewed = {"shards": "dirichlet", "dirichlet_alpha": 0.5, "presentations": "largest-shard"}
    raw = {**QUICK, "ensemble": {**QUICK["ensemble"], **skewed}}
    config_path = tmp_path / "skewed.toml"
    config_path.write_text(tomli_w.dumps(raw))
    out = tmp_path / "run"
    assert cli.main(["train", str(config_path), "--out", str(out)]) == 0
    report = json.loads((out / "ensemble.json").read_text())
    sizes = [record["shard_images"] for record in report["submodels"]]
    assert report["presentations"] == "largest-shard" and sizes[0] != sizes[1]
    assert sum(sizes) == 400
    assert [record["train_samples"] for record in report["submodels"]] == [max(sizes)] * 2
