"""Model cases: missing, broken, mismatched or pickled trained models; devices; CUDA OOM.

The command-line cases run the real participant workflow on a tiny dataset with a ``tiny``
preset model folder (built the way training writes it): a model that cannot be used fails
before any image is read. CUDA out-of-memory needs no GPU: the model's ``translate`` (and the
trainer's step) raise ``torch.cuda.OutOfMemoryError`` above a batch size, as a GPU would.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np

from tests.reliability.corpus import case, dataset
from tests.reliability.harness import Scenario

WEIGHTS = "models/cyclegan/weights.safetensors"
CARD = "models/cyclegan/model.json"


def export_model(folder: Path, kind: str = "cyclegan") -> Path:
    """A trained-model folder as training writes it (tiny preset, random weights)."""
    import torch

    from pseudopet_bids.models import checkpoint as ckpt
    from pseudopet_bids.models.presets import card_hparams, preset
    from pseudopet_bids.models.registry import build_model
    from pseudopet_bids.synthesis.modelspace import SCALING

    hp = preset(kind, "tiny")
    torch.manual_seed(0)
    model = build_model(kind, hp, 1)
    tensors = {k: v for k, v in model.state_dict().items()
               if k.split(".")[0] in model.inference_modules()}
    sha = ckpt.save_weights(folder / ckpt.WEIGHTS, tensors)
    ckpt.write_card(folder, {
        "model": kind, "preset": "tiny", "context_slices": 0, "scaling": SCALING,
        "hparams": card_hparams({k: v for k, v in hp.items() if k not in ("steps", "batch_size")}),
        "weights_sha256": sha, "format_version": ckpt.CARD_FORMAT_VERSION, "config_hash": "t"})
    return folder


def _with_model(tmp: Path, *args: str) -> tuple[Path, Path, Scenario]:
    """sub-01 plus a model folder beside the dataset (``--model PATH``); real workflow."""
    root = dataset(tmp)
    models = tmp / "models"
    folder = export_model(models / "cyclegan")
    return root, folder, Scenario(root, ["--model", str(folder), *args], pipeline="real")


def _argv_model(scenario: Scenario, tmp: Path, model: Path) -> Scenario:
    scenario.argv = [str(scenario.root), str(tmp / "out"), "participant", "-w", str(tmp / "work"),
                     "--omp-nthreads", "1", "--skip-bids-validation", "--model", str(model)]
    return scenario


@case("models", "--model folder without model.json", 66,
      "refused as a missing input before any output", "no trained model in")
def model_folder_without_card(tmp: Path) -> Scenario:
    root = dataset(tmp)
    (tmp / "models" / "cyclegan").mkdir(parents=True)
    scenario = Scenario(root, file="models/cyclegan", fix="train one first")
    return _argv_model(scenario, tmp, tmp / "models" / "cyclegan")


@case("models", "--model pointing at a .pth file", 66,
      "refused as a missing input before any output", "no trained model in")
def model_path_is_a_file(tmp: Path) -> Scenario:
    root = dataset(tmp)
    pth = tmp / "model.pth"
    pth.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return _argv_model(Scenario(root, file="model.pth", fix="train one first"), tmp, pth)


@case("models", "model.json that is not JSON", 66,
      "refused at pre-flight, before any output", "model card is not valid JSON")
def model_card_invalid(tmp: Path) -> Scenario:
    root, folder, scenario = _with_model(tmp)
    (folder / "model.json").write_text("{not json")
    scenario.file, scenario.fix = "cyclegan/model.json", "retrain the model"
    return scenario


@case("models", "weights.safetensors missing", 66,
      "refused at pre-flight (the whole model folder is loaded once), before any output",
      "file not found")
def weights_missing(tmp: Path) -> Scenario:
    root, folder, scenario = _with_model(tmp)
    (folder / "weights.safetensors").unlink()
    scenario.file, scenario.fix = "cyclegan/weights.safetensors", "train the model first"
    return scenario


@case("models", "weights.safetensors truncated", 66,
      "refused at pre-flight, before any output", "safetensors")
def weights_truncated(tmp: Path) -> Scenario:
    root, folder, scenario = _with_model(tmp)
    path = folder / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    scenario.file, scenario.fix = "cyclegan/weights.safetensors", "retrain the model"
    return scenario


@case("models", "weights that do not match the card's sha256 (another training run)", 66,
      "refused at pre-flight, before any output", "weights do not match their model card")
def weights_sha_mismatch(tmp: Path) -> Scenario:
    from pseudopet_bids.models import checkpoint as ckpt

    root, folder, scenario = _with_model(tmp)
    other = export_model(tmp / "other" / "cyclegan")

    tensors = ckpt.load_weights(other / "weights.safetensors")
    ckpt.save_weights(folder / "weights.safetensors",
                      {k: v + 1.0 if v.is_floating_point() else v for k, v in tensors.items()})
    scenario.file, scenario.fix = "cyclegan/weights.safetensors", "from the same training run"
    return scenario


@case("models", "SynDiff weights under a CycleGAN card (sha256 updated)", 66,
      "refused at pre-flight: the tensors do not fit the architecture",
      "the weights do not fit the cyclegan tiny architecture")
def weights_other_architecture(tmp: Path) -> Scenario:
    import json

    from pseudopet_bids.io import files

    root, folder, scenario = _with_model(tmp)
    syndiff = export_model(tmp / "other" / "syndiff", "syndiff")
    data = (syndiff / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data)
    card = json.loads((folder / "model.json").read_text())
    card["weights_sha256"] = files.sha256_file(folder / "weights.safetensors")
    (folder / "model.json").write_text(json.dumps(card))
    scenario.file, scenario.fix = "cyclegan/weights.safetensors", "retrain the model"
    return scenario


class _Payload:
    """Unpickling this would create a file (what a malicious checkpoint could do)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


@case("models", "a pickle (with a code-running payload) where the weights are expected", 66,
      "refused at pre-flight as a pickle and never unpickled: the payload did not run",
      "never unpickles")
def weights_pickled(tmp: Path) -> Scenario:
    root, folder, scenario = _with_model(tmp)
    sentinel = tmp / "payload-ran"
    (folder / "weights.safetensors").write_bytes(pickle.dumps(_Payload(sentinel), protocol=2))
    scenario.file, scenario.fix = "cyclegan/weights.safetensors", "convert it"

    def verify(run) -> None:
        assert not sentinel.exists(), "the pickle was loaded"

    scenario.verify = verify
    return scenario


@case("models", "--device cuda without a GPU", 64, "usage error before any output",
      "--device cuda was requested but no CUDA GPU is available")
def device_cuda_without_gpu(tmp: Path) -> Scenario:
    root, folder, scenario = _with_model(tmp, "--device", "cuda")
    scenario.fix = "use --device cpu"
    # the machine running the tests may have a GPU: the case is about one without
    scenario.patch = {"torch.cuda.is_available": lambda: False}
    return scenario


# --------------------------------------------------------------------------- CUDA OOM


class _OOMModel:
    """A translation model that runs out of CUDA memory above ``limit`` slices per batch."""

    stochastic = False

    def __init__(self, limit: int):
        self.limit, self.batches = limit, []

    def translate(self, x, gen=None):
        import torch

        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.clone()  # identity: the output is checkable


def _translate(limit: int):
    import torch

    from pseudopet_bids.synthesis.apply import TrainedModel, translate_volume

    rng = np.random.default_rng(0)
    mri = rng.uniform(-1, 1, (8, 8, 12)).astype(np.float32)
    mask = np.ones(mri.shape, bool)
    model = _OOMModel(limit)
    trained = TrainedModel(model, {}, Path("."), None, 0)
    mean, _ = translate_volume(trained, mri, mask, torch.device("cpu"), batch_size=8)
    return model, mri, mean


@case("models", "CUDA out of memory above 2 slices per synthesis batch", 0,
      "the batch is halved (8, 4, 2) until it fits, with a warning; the result is unchanged",
      "CUDA out of memory: synthesis batch reduced to 2 slices", level="function")
def cuda_oom_synthesis_backoff(tmp: Path) -> Scenario:
    def verify(run) -> None:
        model, mri, mean = run.value
        assert model.batches[:3] == [8, 4, 2] and max(model.batches[3:]) == 2
        np.testing.assert_array_equal(mean, mri)

    return Scenario(dataset(tmp), call=lambda: _translate(2), verify=verify)


@case("models", "CUDA out of memory even with one slice per synthesis batch", 1,
      "the participant fails with a clear message and the fix", "one slice per batch",
      level="function")
def cuda_oom_synthesis_one_slice(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp), call=lambda: _translate(0), fix="use --device cpu")


def _train_step(limit: int):
    import torch

    from pseudopet_bids.models.presets import preset
    from pseudopet_bids.models.registry import build_model
    from pseudopet_bids.train.trainer import Trainer, TrainSettings

    model = build_model("cyclegan", preset("cyclegan", "tiny"), 1)
    inner = model.phase_loss
    seen: list[int] = []

    def phase_loss(phase, batch, ctx, step):
        if phase == "G":
            seen.append(len(batch["mri"]))
        if len(batch["mri"]) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return inner(phase, batch, ctx, step)

    model.phase_loss = phase_loss  # type: ignore[method-assign]
    sampler = type("Sampler", (), {"batch": staticmethod(lambda step: {
        "mri": np.zeros((8, 1, 16, 16), np.float32),
        "pet": np.zeros((8, 1, 16, 16), np.float32)})})()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, sampler, TrainSettings(steps=1, batch_size=8, device="cpu"),
                          Path(tmp), {"config_hash": "x"})
        trainer._step_with_backoff(sampler.batch(0))
    return trainer.accumulate, sorted(set(seen), reverse=True)


@case("models", "CUDA out of memory in training above 2 slices per micro-batch", 0,
      "gradient accumulation doubles (1, 2, 4) until it fits, with a warning",
      "gradient accumulation raised to 4", level="function")
def cuda_oom_training_backoff(tmp: Path) -> Scenario:
    def verify(run) -> None:
        accumulate, seen = run.value
        assert accumulate == 4 and seen == [8, 4, 2]

    return Scenario(dataset(tmp), call=lambda: _train_step(2), verify=verify)


@case("models", "CUDA out of memory in training with one slice per micro-batch", 1,
      "training stops with a clear message and the fix", "even with one slice per micro-batch",
      level="function")
def cuda_oom_training_one_slice(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp), call=lambda: _train_step(0), fix="--device cpu")


# --------------------------------------------------------------------------- cluster calibration
def _normative(out: Path, n_controls: int = 12, model_sha: str | None = None,
               **settings: object) -> Path:
    """``out/models/normative-tissue`` as ``group --build-normative`` writes it (tiny sums),
    with a cluster calibration of ``n_controls`` controls made with ``settings``."""
    from pseudopet_bids.detect import calibration, normative
    from pseudopet_bids.synthesis.select import choose_model

    folder = out / "models" / "normative-tissue"
    stats = normative.NormativeStats.empty((2, 2, 2), np.eye(4))
    for i in range(3):
        stats.add(f"sub-C{i}", np.zeros((2, 2, 2)), np.ones((2, 2, 2), bool))
    from pseudopet_bids.config import RunConfig
    from pseudopet_bids.workflows.evidence import detection_settings

    base = {**detection_settings(RunConfig()), **settings}  # the defaults, then the changes
    null = calibration.ClusterNull(base, {f"sub-C{i}": [500.0] for i in range(n_controls)})
    digests = normative.save_evidence(folder, {"subject": null}, None)
    sha = model_sha or choose_model(out, "tissue").sha256
    normative.save(folder, stats, {"name": folder.name, "model": "tissue", "model_sha256": sha,
                                   "evidence_sha256": digests})
    return folder


@case("models", "--cluster-inference controls without a normative model", 64,
      "usage error before any output", "--cluster-inference controls: no normative model")
def calibration_missing(tmp: Path) -> Scenario:
    return Scenario(dataset(tmp), ["--cluster-inference", "controls"],
                    file="normative-tissue", fix="--build-normative")


@case("models", "--cluster-inference controls with a calibration made at another Z threshold",
      64, "usage error before any output naming the setting",
      "made with other settings (z_threshold)")
def calibration_other_settings(tmp: Path) -> Scenario:
    _normative(tmp / "out", z_threshold=2.33)
    return Scenario(dataset(tmp), ["--cluster-inference", "controls"],
                    file="normative-tissue", fix="--z-threshold")


@case("models", "--cluster-inference controls with a normative model of other tissue weights",
      64, "usage error before any output", "built with other tissue weights")
def calibration_other_model(tmp: Path) -> Scenario:
    _normative(tmp / "out", model_sha="0" * 64)
    return Scenario(dataset(tmp), ["--cluster-inference", "controls"],
                    file="normative-tissue", fix="--build-normative")


@case("models", "a cluster calibration of 4 controls (10 needed), default --cluster-inference",
      0, "runs; the log says the p-values come from the random-field fallback, why, and how "
         "many controls are needed", "it needs 10")
def calibration_too_few_controls(tmp: Path) -> Scenario:
    _normative(tmp / "out", n_controls=4)
    return Scenario(dataset(tmp), fix="--build-normative", ran={"sub-01"})
