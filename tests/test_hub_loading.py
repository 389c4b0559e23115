"""Loading DCR folders through the Auto classes and the pipeline: remote code and the Hugging Face cache."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from tests.layouts import smooth_photo
from tests.models import tiny_config

from dcr_hf import DCRForImageClassification, DCRImageProcessor, DCRModel, branch_model_from_trunk
from dcr_hf.modeling_dcr import CUSTOM_PIPELINES

EXPECTED_AUTO_MAP = {
    "AutoConfig": "configuration_dcr.DCRConfig",
    "AutoModel": "modeling_dcr.DCRModel",
    "AutoModelForImageClassification": "modeling_dcr.DCRForImageClassification",
}


def _trunk_and_branch(tmp_path):
    torch.manual_seed(0)
    trunk = DCRForImageClassification(tiny_config()).eval()
    branch = branch_model_from_trunk(trunk, specialized_initialization=False).eval()
    paths = {}
    for name, model in (("trunk", trunk), ("branch", branch)):
        paths[name] = tmp_path / name
        model.save_pretrained(paths[name])
        DCRImageProcessor(image_size=32).save_pretrained(paths[name])
    return trunk, branch, paths


def test_saved_folder_is_complete(tmp_path):
    _, _, paths = _trunk_and_branch(tmp_path)
    for path in paths.values():
        files = set(os.listdir(path))
        assert {"config.json", "model.safetensors", "configuration_dcr.py", "modeling_dcr.py", "losses_dcr.py",
                "image_processing_dcr.py", "pipeline_dcr.py", "preprocessor_config.json"} <= files
        config = json.loads((path / "config.json").read_text())
        assert config["auto_map"] == EXPECTED_AUTO_MAP
        assert config["custom_pipelines"] == CUSTOM_PIPELINES
        processor_config = json.loads((path / "preprocessor_config.json").read_text())
        assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing_dcr.DCRImageProcessor"}


def _run_without_dcr_hf(script: str, cwd, extra_env: dict | None = None) -> str:
    """Run `script` in a fresh interpreter whose sys.path cannot reach the dcr_hf package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra_env or {})
    guard = textwrap.dedent(
        """
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "dcr_hf" or name.startswith("dcr_hf."):
                    raise ImportError("dcr_hf is blocked in this test")
        sys.meta_path.insert(0, _Block())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", guard + textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_trust_remote_code_in_a_process_without_dcr_hf(tmp_path):
    trunk, branch, paths = _trunk_and_branch(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    out = _run_without_dcr_hf(
        f"""
        import torch
        try:
            import dcr_hf
            raise SystemExit("dcr_hf was importable")
        except ImportError:
            pass
        from transformers import AutoModel, AutoModelForImageClassification
        x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
        trunk = AutoModel.from_pretrained({str(paths['trunk'])!r}, trust_remote_code=True).eval()
        branch = AutoModel.from_pretrained({str(paths['branch'])!r}, trust_remote_code=True).eval()
        head = AutoModelForImageClassification.from_pretrained({str(paths['branch'])!r}, trust_remote_code=True).eval()
        assert "transformers_modules" in type(trunk).__module__, type(trunk).__module__
        import sys
        assert any(name.startswith("transformers_modules") and name.endswith(".losses_dcr") for name in sys.modules)
        with torch.no_grad():
            torch.save({{
                "trunk": trunk(x).pooler_output,
                "branch8": branch(x, resolution=8).pooler_output,
                "head": head(x.unsqueeze(1).expand(-1, 3, -1, -1, -1)).logits,
                "loss": head(x.unsqueeze(1).expand(-1, 3, -1, -1, -1), labels=torch.tensor([0, 1])).loss,
            }}, {str(tmp_path / 'out.pt')!r})
        print(type(head).__name__)
        """,
        cwd=tmp_path,
    )
    assert "DCRForImageClassification" in out
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(got["trunk"], trunk.dcr(x).pooler_output)
        expected8 = branch.dcr.branches[1](branch.dcr(x).trunk_embeddings)
        torch.testing.assert_close(got["branch8"], expected8)
        torch.testing.assert_close(got["head"], branch(x.unsqueeze(1).expand(-1, 3, -1, -1, -1)).logits)
        # The loss comes from the folder's own losses_dcr.py (copied beside modeling_dcr.py).
        torch.testing.assert_close(got["loss"], branch(x.unsqueeze(1).expand(-1, 3, -1, -1, -1), labels=torch.tensor([0, 1])).loss)


@pytest.mark.slow
def test_processor_and_pipeline_with_trust_remote_code_alone(tmp_path):
    """Where dcr_hf cannot be imported, the folder's own processor and pipeline give the tensors and
    embeddings that dcr_hf gives: native LR crops routed to their branch, forced and simulated probes."""
    trunk, branch, paths = _trunk_and_branch(tmp_path)
    rng = np.random.default_rng(3)
    images = {name: tmp_path / f"{name}.png" for name in ("hr", "crop8", "crop11x13")}
    for name, (height, width) in {"hr": (50, 40), "crop8": (8, 8), "crop11x13": (13, 11)}.items():
        PIL.Image.fromarray(smooth_photo(rng, height, width)).save(images[name])
    calls = {  # name: (image, pipeline kwargs)
        "hr": ("hr", {}), "crop8": ("crop8", {}), "crop11x13": ("crop11x13", {}),
        "forced8": ("hr", {"resolution": 8}), "simulated8": ("hr", {"low_resolution_size": 8}),
    }
    out = tmp_path / "remote.pt"
    _run_without_dcr_hf(
        f"""
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, pipeline
        images, calls = {({k: str(v) for k, v in images.items()})!r}, {calls!r}
        saved = {{}}
        for kind, folder in {({k: str(v) for k, v in paths.items()})!r}.items():
            processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
            assert "transformers_modules" in type(processor).__module__, type(processor).__module__
            saved[kind + "/pixels"] = processor(Image.open(images["hr"])).pixel_values
            saved[kind + "/pixels8"] = processor(Image.open(images["hr"]), low_resolution_size=8).pixel_values
            pipe = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
            assert "transformers_modules" in type(pipe).__module__ and "transformers_modules" in type(pipe.model).__module__
            for name, (image, kwargs) in calls.items():
                saved[kind + "/" + name] = pipe(images[image], return_tensors=True, **kwargs)
                saved[kind + "/" + name + "/branch"] = pipe.resolution_for(images[image], **kwargs)
        torch.save(saved, {str(out)!r})
        """,
        cwd=tmp_path,
    )
    got = torch.load(out, weights_only=True)
    processor = DCRImageProcessor(image_size=32)
    hr = PIL.Image.open(images["hr"])
    branches = {"hr": "hr", "crop8": 8, "crop11x13": 12, "forced8": 8, "simulated8": 8}
    # The oracle is each folder's model loaded here: a freshly built model and its reloaded copy
    # (same weights to the bit, in other memory) can differ in the last bit of a result.
    loaded = {kind: DCRModel.from_pretrained(paths[kind]).eval() for kind in paths}
    for kind, model in loaded.items():
        torch.testing.assert_close(got[f"{kind}/pixels"], processor(hr).pixel_values, rtol=0, atol=0)
        torch.testing.assert_close(got[f"{kind}/pixels8"], processor(hr, low_resolution_size=8).pixel_values, rtol=0, atol=0)
        for name, (image, kwargs) in calls.items():
            assert got[f"{kind}/{name}/branch"] == branches[name], (kind, name)
            pixels = processor(PIL.Image.open(images[image]), low_resolution_size=kwargs.get("low_resolution_size")).pixel_values
            with torch.no_grad():
                expected = model(pixels, resolution=branches[name]).pooler_output
            torch.testing.assert_close(got[f"{kind}/{name}"], expected, rtol=0, atol=0, msg=f"{kind} {name}")
    # The branch model's branches really differ: the routing is what the equalities above check.
    assert not torch.equal(got["branch/crop8"], got["branch/crop11x13"])
    with torch.no_grad():
        assert not torch.equal(got["branch/forced8"], branch.dcr(processor(hr).pixel_values).pooler_output)


def _populate_cache(cache, repo_id, folder):
    """Lay a folder out as the Hub cache does: models--org--name/{refs/main, snapshots/<sha>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


@pytest.mark.slow
@pytest.mark.parametrize("remote_code", [False, True])
def test_auto_model_from_hub_ids_in_offline_cache(tmp_path, remote_code):
    trunk, branch, paths = _trunk_and_branch(tmp_path)
    cache = tmp_path / "hub-cache"
    _populate_cache(cache, "org/dcr-trunk", paths["trunk"])
    _populate_cache(cache, "org/dcr-branch", paths["branch"])
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
        import torch
        from transformers import AutoModel
        {"kw = dict(trust_remote_code=True)" if remote_code else "import dcr_hf; kw = {}"}
        x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
        trunk = AutoModel.from_pretrained("org/dcr-trunk", **kw).eval()
        branch = AutoModel.from_pretrained("org/dcr-branch", **kw).eval()
        with torch.no_grad():
            torch.save({{"trunk": trunk(x).pooler_output, "branch": branch(x, resolution=12).pooler_output}},
                       {str(tmp_path / 'out.pt')!r})
        """
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    if remote_code:
        _run_without_dcr_hf(script, cwd=tmp_path, extra_env=env)
    else:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(got["trunk"], trunk.dcr(x).pooler_output)
        torch.testing.assert_close(got["branch"], branch.dcr.branches[2](branch.dcr(x).trunk_embeddings))


def test_a_folder_saved_without_a_processor_warns_once_naming_what_is_assumed(tmp_path, caplog):
    import logging

    from dcr_hf.hub import load_model_and_processor

    folder = tmp_path / "no-processor"
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists()
    caplog.set_level(logging.WARNING, logger="dcr_hf")
    for _ in range(2):  # a run loads (and evaluates) a model more than once: one warning says it
        _, processor = load_model_and_processor(str(folder))
    warnings = [r.getMessage() for r in caplog.records if "assuming DCRImageProcessor's defaults" in r.getMessage()]
    assert len(warnings) == 1, warnings
    size = tiny_config().image_size
    assert processor.image_size == size
    assert f"'{folder}' has no preprocessor_config.json" in warnings[0]
    assert (f"image size {size}x{size}, mean {processor.image_mean}, std {processor.image_std}, LR operator "
            f"{processor.downsample_interpolation} down / {processor.upsample_interpolation} up") in warnings[0]


def _resave_weights(folder, change) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    change(weights)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_every_tensor_is_checked_against_the_config_before_the_model_is_built(tmp_path, monkeypatch):
    """A folder saved from the embedder (`DCRModel`: names without the `dcr.` prefix) and one from
    the training head are both checked, tensor by tensor, before transformers builds anything."""
    from transformers import AutoModel

    from dcr_hf.errors_dcr import DCRInputError
    from dcr_hf.hub import load_model_and_processor

    embedder = tmp_path / "embedder"
    DCRModel(tiny_config(use_branches=True)).save_pretrained(embedder)
    DCRImageProcessor(image_size=32).save_pretrained(embedder)
    load_model_and_processor(str(embedder))  # complete and consistent: loads
    name = "branches.1.projection.weight"
    _resave_weights(embedder, lambda weights: weights.update({name: weights[name][:, :-1].clone()}))
    built = []
    monkeypatch.setattr(AutoModel, "from_pretrained", lambda *a, **k: built.append(1))
    with pytest.raises(DCRInputError) as raised:
        load_model_and_processor(str(embedder), "--model_name_or_path")
    assert str(raised.value) == (f"--model_name_or_path {embedder}: {embedder / 'model.safetensors'} holds tensor {name} of "
                                 "shape [32, 31]; the model its config.json describes expects [32, 32].")
    _resave_weights(embedder, lambda weights: weights.update({name: torch.full((32, 32), float("inf"))}))
    with pytest.raises(DCRInputError, match=rf"holds 1024 NaN/inf value\(s\) of 1024 in tensor {name}\.$"):
        load_model_and_processor(str(embedder))
    assert built == []


def test_loading_never_prompts_to_run_a_folders_code(tmp_path, monkeypatch):
    """transformers asks on the terminal (`input()`) before running a folder's own code unless told
    `trust_remote_code`; dcr_hf's loaders never let it ask, and never run it."""
    from transformers import AutoConfig, AutoModel

    from dcr_hf.errors_dcr import DCRInputError
    from dcr_hf.model_files import load_config, load_pretrained

    folder = tmp_path / "other"
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="other-net", auto_map={"AutoConfig": "configuration_other.OtherConfig",
                                                     "AutoModel": "modeling_other.OtherModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_other.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail(f"prompted: {args}"))
    monkeypatch.setattr("transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE", 15)  # as on a terminal
    for load, auto in ((load_config, AutoConfig), (load_pretrained, AutoModel)):
        with pytest.raises(DCRInputError, match=f"^--model {folder}: The repository {folder} contains custom code"):
            load(auto, str(folder), "--model")
    assert not (tmp_path / "ran").exists()


def test_a_hub_models_files_are_checked_as_a_folders_are(tmp_path, monkeypatch):
    from tests.hub_standin import HubStandIn

    from dcr_hf.errors_dcr import DCRInputError
    from dcr_hf.hub import load_model_and_processor

    folder = tmp_path / "bad"
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    _resave_weights(folder, lambda weights: weights.update({"centers": weights["centers"][:3].clone()}))
    with HubStandIn() as hub:
        hub.patch(monkeypatch)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        hub.add_repo("org/bad", private=False)
        hub.files("org/bad").update({p.name: p.read_bytes() for p in folder.iterdir()})
        with pytest.raises(DCRInputError) as raised:
            load_model_and_processor("org/bad", "--model_name_or_path", cache_dir=str(tmp_path / "cache"))
    [snapshot] = (tmp_path / "cache" / "models--org--bad" / "snapshots").iterdir()
    assert str(raised.value) == (f"--model_name_or_path org/bad: {snapshot / 'model.safetensors'} holds tensor centers "
                                 "of shape [3, 32]; the model its config.json describes expects [5, 32].")
