"""The README as a user reads it: every command parses, every link resolves, the snippets run as written.

- Each command of the README's shell blocks is run through its own program's argument parser
  (the script, the `python -m` module or the console command of `pyproject.toml`), stopped right
  after parsing: an option the program does not know, or a value it refuses, fails the test.
- Every relative link of README.md, CONTRIBUTING.md and docs/*.md points at a file that exists
  (and at a heading of it, for `file#anchor` links); every docs page is reachable from the README.
- The Python snippets run exactly as written (slow): in a temporary folder where the quickstart's
  `outputs/dcr-branch` is trained with tiny settings and the README's own command writes the two
  face images they open; the "without dcr_hf" snippet runs in a process where dcr_hf cannot be imported.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
TEST_COMMAND = "HF_HUB_OFFLINE=1 python -m pytest -q tests"


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, `&&` chains split."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:end])
            words = words[end + 1:]
    return [command for command in commands if command]


README_COMMANDS = [command for block in code_blocks(README.read_text(), "bash") for command in shell_commands(block)]


class _Parsed(BaseException):
    """Raised right after a program's parser accepted its arguments (a BaseException, so that no
    error handler of the program mistakes it for a failure)."""


def _stop_after_parsing(monkeypatch) -> None:
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = original(self, args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise _Parsed(parsed)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)


def _entry_point(words: list[str]):
    """`(what runs, its arguments)` for one README command; `None` for the few that are not the project's."""
    if words[0] in SCRIPTS:
        module, function = SCRIPTS[words[0]].split(":")
        return (lambda: getattr(importlib.import_module(module), function)()), [words[0]], words[1:]
    if words[:2] == ["accelerate", "launch"]:
        words = ["python", *words[2:]]
    assert words[0] == "python", f"a README command the test does not know how to check: {shlex.join(words)}"
    if words[1] == "-m":
        module = words[2]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        return (lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)), [module], words[3:]
    script = ROOT / words[1]
    assert script.is_file(), f"the README runs {words[1]}, which is not in the project"
    return (lambda: runpy.run_path(str(script), run_name="__main__")), [str(script)], words[2:]


def _is_project_command(words: list[str]) -> bool:
    return not (words[0] == "pip" or words[:2] == ["python", "-c"] or "pytest" in words)


@pytest.mark.parametrize("words", [w for w in README_COMMANDS if _is_project_command(w)], ids=shlex.join)
def test_each_readme_command_is_accepted_by_its_programs_parser(words, monkeypatch, capsys):
    run, program, arguments = _entry_point(words)
    monkeypatch.setattr(sys, "argv", [*program, *arguments])
    _stop_after_parsing(monkeypatch)
    with pytest.raises((_Parsed, SystemExit)) as stopped:
        run()
    if stopped.type is SystemExit:  # argparse refused the arguments
        pytest.fail(f"{shlex.join(words)} exits {stopped.value.code}:\n{capsys.readouterr().err[-2000:]}")


def test_the_readme_shows_every_console_command_and_the_ci_test_command():
    text = README.read_text()
    assert all(f"`{name}`" in text for name in SCRIPTS), sorted(name for name in SCRIPTS if f"`{name}`" not in text)
    assert [TEST_COMMAND.split()] == [w for w in README_COMMANDS if "pytest" in w]
    assert "\npython -m pytest -q tests\n" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's command


def test_the_install_commands_name_extras_the_project_has():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    installs = [w for w in README_COMMANDS if w[:2] == ["pip", "install"]]
    assert installs
    named = {extra for words in installs for word in words for extra in re.findall(r"\.\[([\w,]+)\]", word)}
    assert named and set(",".join(named).split(",")) <= extras
    text = README.read_text()
    assert all(f"`[{extra}]`" in text for extra in extras), extras


def test_the_python_one_liners_compile():
    one_liners = [w for w in README_COMMANDS if w[:2] == ["python", "-c"]]
    assert one_liners
    for words in one_liners:
        compile(words[2], "README.md", "exec")
    for snippet in code_blocks(README.read_text(), "python"):
        compile(snippet, "README.md", "exec")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {_slug(match) for match in re.findall(r"^#+ (.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    assert page.is_file()
    for target in _links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading in {linked.name}"


def test_every_docs_page_is_linked_from_the_readme_and_the_readme_is_short():
    text = README.read_text()
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in _links(README)}
    pages = set((ROOT / "docs").glob("*.md"))
    assert {"training.md", "evaluation.md", "datasets.md", "hub.md", "converting.md", "reliability.md",
            "benchmarks.md"} <= {page.name for page in pages}
    assert {page.resolve() for page in pages} <= linked, pages - linked
    assert (ROOT / "CONTRIBUTING.md").resolve() in linked
    assert len(text.splitlines()) <= 200
    assert "REFERENCE.md" not in "".join(page.read_text() for page in PAGES)


# The quickstart's two stages at tiny sizes, into the folders the snippets load.
TINY = ["--synthetic_num_identities", "4", "--synthetic_images_per_identity", "2", "--synthetic_num_pairs", "20",
        "--synthetic_num_verification_identities", "20", "--validation_dataset", "none", "--eval_strategy", "no",
        "--load_best_model_at_end", "false", "--max_steps", "1", "--per_device_train_batch_size", "8",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true"]
TINY_TRUNK = ["--image_size", "48", "--low_resolution_sizes", "8", "12", "--depths", "1", "1", "1", "1",
              "--hidden_sizes", "8", "8", "16", "16", "--embedding_size", "16"]
BLOCK_DCR_HF = "import sys; sys.modules['dcr_hf'] = None  # importing dcr_hf fails from here on\n"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, f"{code}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow  # trains two tiny stages and starts three Python processes
def test_the_readme_snippets_run_as_written(tmp_path, monkeypatch):
    from dcr_hf.training.command import main as train_main

    monkeypatch.chdir(tmp_path)
    train_main(["--output_dir", "outputs/dcr-trunk", *TINY, *TINY_TRUNK])
    train_main(["--stage", "branch", "--trunk", "outputs/dcr-trunk", "--output_dir", "outputs/dcr-branch", *TINY])

    one_liners = [w for w in README_COMMANDS if w[:2] == ["python", "-c"]]
    assert len(one_liners) == 1
    _python(one_liners[0][2], tmp_path)  # writes the two images the snippets open
    assert {"mugshot.png", "cctv_face_8x8.png"} <= {p.name for p in tmp_path.iterdir()}

    with_dcr_hf, without_dcr_hf = code_blocks(README.read_text(), "python")
    assert "import dcr_hf" not in without_dcr_hf and "trust_remote_code=True" in without_dcr_hf
    similarity = _python(with_dcr_hf, tmp_path).stdout
    assert re.fullmatch(r"tensor\(\[-?[01]\.\d+, -?[01]\.\d+\]\)\n", similarity), similarity  # real and simulated probe
    assert _python(BLOCK_DCR_HF + without_dcr_hf, tmp_path).stdout == "8\n"  # the branch the crop was routed to
