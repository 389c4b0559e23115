"""`dcr-convert --source arcface_torch|adaface|cvlface`: source networks rebuilt from their public
layouts (`tests.face_sources`), saved as those projects save them, converted, then loaded through
`AutoModel` / `AutoImageProcessor` with `trust_remote_code` in a process without dcr_hf; the
L2-normalized embeddings of the same uint8 images must equal the source's within 1e-4."""

from __future__ import annotations

import contextlib
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcr_hf.configuration_dcr import IRESNET_BODIES, DCRConfig
from dcr_hf.convert.face_backbone import SOURCES, convert_face_backbone
from dcr_hf.convert_original_checkpoint import ARCHITECTURE_CHOICES, main
from dcr_hf.original.errors import ConversionError
from tests import face_sources
from tests.test_hub_loading import _run_without_dcr_hf

SLOW = pytest.mark.slow


@contextlib.contextmanager
def one_line_error(match: str):
    with pytest.raises(ConversionError, match=match) as raised:
        yield
    assert "\n" not in str(raised.value), str(raised.value)


def _images(count: int, seed: int = 0) -> np.ndarray:
    """Aligned 112x112 RGB crops, uint8 `[count, 112, 112, 3]`."""
    return np.random.default_rng(seed).integers(0, 256, (count, 112, 112, 3), dtype=np.uint8)


def _source_embeddings(network, images: np.ndarray, channel_order: str) -> torch.Tensor:
    """The source network's L2-normalized embeddings of RGB `images`, prepared as the source does."""
    pixels = torch.from_numpy(images)
    inputs = face_sources.bgr_input(pixels) if channel_order == "bgr" else face_sources.rgb_input(pixels)
    with torch.no_grad():
        output = network(inputs)
    embedding = output[0] if isinstance(output, tuple) else output
    return F.normalize(embedding.double(), dim=-1).float()


def _remote_embeddings(folder, images: np.ndarray, tmp_path) -> torch.Tensor:
    """The converted folder's embeddings of `images` (PIL images, numpy images and a uint8 tensor batch,
    which must agree),
    through trust_remote_code in a process that cannot import dcr_hf."""
    np.save(tmp_path / "images.npy", images)
    _run_without_dcr_hf(
        f"""
        import numpy as np, PIL.Image, torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        images = np.load({str(tmp_path / "images.npy")!r})
        from_pil = processor([PIL.Image.fromarray(image) for image in images]).pixel_values
        from_numpy = processor(list(images)).pixel_values
        from_tensor = processor(torch.from_numpy(images).permute(0, 3, 1, 2)).pixel_values
        assert torch.equal(from_pil, from_numpy) and torch.equal(from_pil, from_tensor)
        with torch.no_grad():
            torch.save(model(pixel_values=from_pil).pooler_output, {str(tmp_path / "got.pt")!r})
        """,
        cwd=tmp_path,
    )
    return torch.load(tmp_path / "got.pt")


def _convert(*argv: str) -> None:
    main([*argv])


def _library_convert(source: str, checkpoint, architecture: str, output, **options) -> None:
    """The conversion without the command line (whose error handler exits): its errors raise."""
    convert_face_backbone(source, checkpoint, architecture, output, **options)


CASES = [
    ("arcface_torch", "r18", "model.pt", []),
    ("arcface_torch", "r50", "model.pt", [SLOW]),
    ("arcface_torch", "r100", "backbone.pth", [SLOW]),
    ("adaface", "ir_18", "adaface_ir18.ckpt", []),
    ("adaface", "ir_50", "adaface_ir50.ckpt", [SLOW]),
    ("adaface", "ir_101", "adaface_ir101.ckpt", [SLOW]),
    ("adaface", "ir_se_50", "adaface_ir_se50.ckpt", [SLOW]),
    ("arcface_torch", "r18", "checkpoint_gpu_0.pt", []),
    ("cvlface", "ir_18", "model.safetensors", []),
]


def _save(source: str, architecture: str, filename: str, path) -> torch.nn.Module:
    """The source network of `architecture`, random, written to `path` as `source` writes `filename`."""
    if source == "arcface_torch":
        network = face_sources.insightface_network(architecture)
        if filename.startswith("checkpoint_gpu_"):
            face_sources.save_arcface_torch_training_checkpoint(network, path)
        else:
            face_sources.save_arcface_torch_model(network, path)
    elif source == "adaface":
        network = face_sources.adaface_network(architecture)
        face_sources.save_adaface_lightning_checkpoint(network, path)
    else:
        from safetensors.torch import save_file

        network = face_sources.adaface_network(architecture)
        save_file({f"net.{key}": value.contiguous() for key, value in network.state_dict().items()}, str(path))
    return network


@pytest.mark.parametrize(
    "source,architecture,filename", [pytest.param(*case[:3], marks=case[3], id=f"{case[0]}-{case[1]}-{case[2]}") for case in CASES]
)
def test_converted_embeddings_equal_the_source_networks(tmp_path, source, architecture, filename):
    network = _save(source, architecture, filename, tmp_path / filename)
    folder = tmp_path / "converted"
    _convert("--source", source, "--checkpoint", str(tmp_path / filename), "--architecture", architecture,
             "--output_dir", str(folder))
    images = _images(2)
    expected = _source_embeddings(network, images, SOURCES[source].channel_order)
    got = _remote_embeddings(folder, images, tmp_path)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # The embeddings differ between images: the comparison is not of two constant outputs.
    assert (expected[0] - expected[1]).abs().max() > 1e-2
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor_config["channel_order"] == SOURCES[source].channel_order
    assert processor_config["image_size"] == 112 and processor_config["image_mean"] == [0.5] * 3


def test_the_channel_order_matters(tmp_path):
    """An AdaFace network fed RGB (the wrong order) gives other embeddings: the processor's BGR setting is what makes them equal."""
    network = _save("adaface", "ir_18", "a.ckpt", tmp_path / "a.ckpt")
    images = _images(2, seed=3)
    assert (_source_embeddings(network, images, "bgr") - _source_embeddings(network, images, "rgb")).abs().max() > 1e-3


def test_the_command_line_architectures_are_the_config_table():
    assert ARCHITECTURE_CHOICES == tuple(IRESNET_BODIES)


def test_bodies_build_the_published_networks():
    """Parameter counts of our trunks equal the source networks' (the same tensors, renamed)."""
    for architecture, network in (("r18", face_sources.insightface_network("r18")), ("ir_se_50", face_sources.adaface_network("ir_se_50"))):
        ours = DCRConfig(**IRESNET_BODIES[architecture])
        from dcr_hf.modeling_dcr import DCRModel

        with torch.device("meta"):
            model = DCRModel(ours)
        assert sum(t.numel() for t in model.state_dict().values()) == sum(t.numel() for t in network.state_dict().values())


# -- refusals -----------------------------------------------------------------------------------


def test_a_file_of_another_architecture_is_refused_naming_the_first_mismatch(tmp_path):
    _save("arcface_torch", "r18", "model.pt", tmp_path / "model.pt")
    with one_line_error(r"model.pt is not an r34 IResNet backbone .*: missing key layer1\.2\.bn1\.weight \(and \d+ more\)"):
        _library_convert("arcface_torch", tmp_path / "model.pt", "r34", tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()


def test_unexpected_keys_and_shapes_are_named(tmp_path):
    network = face_sources.adaface_network("ir_se_50")
    torch.save(network.state_dict(), tmp_path / "se.pt")
    with one_line_error(r"se.pt is not an ir_50 IR backbone \(AdaFace layout\): unexpected key body\.0\.res_layer\.se_block\.fc1\.weight"):
        _library_convert("adaface", tmp_path / "se.pt", "ir_50", tmp_path / "out")
    state = face_sources.insightface_network("r18").state_dict()
    state["fc.weight"] = state["fc.weight"][:256]
    torch.save(state, tmp_path / "narrow.pt")
    with one_line_error(r"fc\.weight has shape \(256, 25088\), expected \(512, 25088\)"):
        _library_convert("arcface_torch", tmp_path / "narrow.pt", "r18", tmp_path / "out")


def test_an_architecture_of_the_other_project_is_refused_before_reading(tmp_path):
    with one_line_error(r"--architecture ir_50 is not one of the insightface arcface_torch networks \['r18'"):
        _library_convert("arcface_torch", tmp_path / "nothing.pt", "ir_50", tmp_path / "out")


class RunsCode:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_truncated_directory_and_code_running_files_are_refused(tmp_path):
    _save("adaface", "ir_18", "full.ckpt", tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with one_line_error(r"cut.ckpt is truncated or corrupt"):
        _library_convert("adaface", tmp_path / "cut.ckpt", "ir_18", tmp_path / "out")
    with one_line_error(r"is a folder, not a file; expected the backbone's checkpoint file"):
        _library_convert("adaface", tmp_path, "ir_18", tmp_path / "out")
    with open(tmp_path / "evil.ckpt", "wb") as file:
        pickle.dump({"state_dict": RunsCode()}, file)
    with one_line_error(r"evil.ckpt is a pickle that would import .*weights_only=True refused it, and nothing in it was run"):
        _library_convert("adaface", tmp_path / "evil.ckpt", "ir_18", tmp_path / "out")
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": RunsCode()}, tmp_path / "hp.ckpt")
    with one_line_error(r"hp.ckpt is a pickle that would import .*nothing in it was run"):
        _library_convert("adaface", tmp_path / "hp.ckpt", "ir_18", tmp_path / "out")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with one_line_error(r"cut.safetensors is truncated or corrupt"):
        _library_convert("cvlface", tmp_path / "cut.safetensors", "ir_18", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_original_only_options_are_refused_with_another_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _convert("--source", "adaface", "--checkpoint", "x.ckpt", "--architecture", "ir_18", "--stage", "trunk",
                 "--output_dir", str(tmp_path / "out"))
    assert "--stage does not apply to --source adaface" in capsys.readouterr().err


# -- the card -------------------------------------------------------------------------------------


def test_the_card_names_source_architecture_dataset_and_licence(tmp_path):
    _save("arcface_torch", "r18", "model.pt", tmp_path / "model.pt")
    folder = tmp_path / "converted"
    _convert("--source", "arcface_torch", "--checkpoint", str(tmp_path / "model.pt"), "--architecture", "r18",
             "--output_dir", str(folder), "--source_dataset", "MS1MV3", "--source_license", "insightface-non-commercial",
             "--base_model", "org/arcface-r18")
    card = (folder / "README.md").read_text()
    assert "insightface arcface_torch" in card and "`r18`" in card and "MS1MV3" in card
    assert "non-commercial research purposes only" in card
    assert "base_model: org/arcface-r18" in card and "license: other" in card
    assert "| input | RGB 112x112" in card


def test_a_local_base_model_is_refused_and_no_licence_is_said(tmp_path):
    _save("adaface", "ir_18", "a.ckpt", tmp_path / "a.ckpt")
    with one_line_error(r"--base_model './models/x' is not a Hub model id"):
        _library_convert("adaface", tmp_path / "a.ckpt", "ir_18", tmp_path / "out", base_model="./models/x")
    _convert("--source", "adaface", "--checkpoint", str(tmp_path / "a.ckpt"), "--architecture", "ir_18",
             "--output_dir", str(tmp_path / "out"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "base_model" not in card and "license: unknown" in card and "| input | BGR 112x112" in card
    assert "not given at conversion" in card
