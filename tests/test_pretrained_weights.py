"""The encoders' ImageNet weights (heritage.modeling.pretrained_weights, ``python -m heritage weights``): the file
each encoder loads, checked against what timm and SMP themselves download; fetching into the Hugging Face cache
from a fake Hub; a Hub that refuses and offline mode; ``paper``'s check of the plan's pretrained encoders."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm.models._hub
import torch
from huggingface_hub import constants as hub_constants
from torch import nn

from heritage import cli, config, errors
from heritage.modeling import pretrained_weights, registry
from heritage.pipeline import paper

# The commit a fake repo's main branch points at (SMP's repos are asked at a pinned commit of their own).
MAIN_COMMIT = "c0ffee" + "0" * 34


class FakeHub(http.server.ThreadingHTTPServer):
    """huggingface.co as ``hf_hub_download`` talks to it (HEAD, then GET, of ``/<repo>/resolve/<revision>/<file>``),
    serving ``files[(repo_id, filename)]`` and recording every file request as (method, repo, revision, file)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHubHandler)
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def downloads(self) -> list[tuple[str, str, str]]:
        return sorted((repo, revision, filename) for method, repo, revision, filename in self.requests if method == "GET")


class _FakeHubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def _answer(self) -> bytes | None:
        repo, found, rest = self.path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not found:  # the Hub check (HEAD /) or huggingface_hub's own side requests
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.server.requests.append((self.command, repo, revision, filename))
        body = self.server.files.get((repo, filename))
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", revision if len(revision) == 40 else MAIN_COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return body

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        body = self._answer()
        if body:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch, empty_hub_cache, tmp_path):
    """A running FakeHub that huggingface_hub (and the Hub check) talk to, over an empty cache; online."""
    hub = FakeHub()
    monkeypatch.setattr(hub_constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
    yield hub
    hub.shutdown()
    hub.server_close()


def served_weights(hub: FakeHub) -> dict[str, pretrained_weights.WeightsFile]:
    """Put a small file in every encoder's weights repo; the encoders' WeightsFiles."""
    files = {encoder: pretrained_weights.weights_file(encoder) for encoder in registry.ENCODERS}
    hub.files.update({(w.repo_id, w.filename): f"weights of {encoder}".encode() for encoder, w in files.items()})
    return files


def download_of(weights: pretrained_weights.WeightsFile) -> tuple[str, str, str]:
    return weights.repo_id, weights.revision or "main", weights.filename


def test_each_encoder_names_the_file_timm_or_smp_would_download(monkeypatch, tmp_path):
    # SMP's encoder factory with its own pretrained switch: the last file each encoder asks the Hub for is
    # the weights (SMP asks for its config.json first), and it is the one build_model resolves in the cache.
    # Built on the meta device (timm) or as a stand-in module (SMP's own): only the download is of interest.
    requested: list[tuple[str, str, str | None]] = []

    class Asked(Exception):
        pass

    def record(repo_id: str, filename: str, revision: str | None = None, **_: object) -> str:
        requested.append((repo_id, filename, revision))
        if filename.endswith(".safetensors"):
            raise Asked  # the weights: what we wanted to know, before anything is loaded
        (tmp_path / filename).write_text("{}")
        return str(tmp_path / filename)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", record)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", record)
    for encoder, spec in registry.ENCODERS.items():
        requested.clear()
        if not spec.is_timm:
            monkeypatch.setitem(smp.encoders.encoders, spec.smp_name,
                                {**smp.encoders.encoders[spec.smp_name], "encoder": lambda **_: nn.Identity()})
        with pytest.raises(Asked), torch.device("meta"):
            smp.encoders.get_encoder(spec.smp_name, weights=True if spec.is_timm else "imagenet",
                                     **spec.encoder_kwargs(64))
        weights = pretrained_weights.weights_file(encoder)
        assert requested[-1] == (weights.repo_id, weights.filename, weights.revision), encoder
    assert pretrained_weights.weights_file("convnext_tiny") == pretrained_weights.WeightsFile(
        "convnext_tiny", "timm/convnext_tiny.fb_in1k", "model.safetensors")


def test_fetch_downloads_what_is_missing_and_check_lists_the_cache(fake_hub, empty_hub_cache, capsys):
    files = served_weights(fake_hub)
    assert cli.main(["weights", "check"]) == errors.EXIT_FAILED  # nothing cached yet
    assert fake_hub.requests == []  # checking never asks the Hub
    assert cli.main(["weights", "fetch", "--encoders", "convnext_tiny", "mit_b3"]) == 0
    assert fake_hub.downloads() == sorted(download_of(files[e]) for e in ("convnext_tiny", "mit_b3"))
    for encoder in ("convnext_tiny", "mit_b3"):
        cached = Path(files[encoder].cached_path())
        assert cached.is_relative_to(empty_hub_cache) and cached.read_bytes() == f"weights of {encoder}".encode()
    capsys.readouterr()

    assert cli.main(["weights", "check"]) == errors.EXIT_FAILED
    out, err = capsys.readouterr()
    states = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert states == {"convnext_tiny": "cached", "mit_b3": "cached", "swin_tiny": "missing", "coatnet_0": "missing",
                      "maxvit_tiny": "missing"}
    assert err.count("\n") == 1 and "swin_tiny, coatnet_0, maxvit_tiny" in err
    assert "`python -m heritage weights fetch --encoders swin_tiny coatnet_0 maxvit_tiny`" in err

    fake_hub.requests.clear()
    assert cli.main(["weights", "fetch"]) == 0  # the rest, and nothing twice
    assert fake_hub.downloads() == sorted(download_of(files[e]) for e in ("swin_tiny", "coatnet_0", "maxvit_tiny"))
    assert cli.main(["weights", "check"]) == 0
    assert "all 5 encoders' weights are in the Hugging Face cache" in capsys.readouterr().out


def test_fetch_from_a_hub_that_refuses_is_one_line_and_writes_nothing(monkeypatch, empty_hub_cache, capfd):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    assert cli.main(["weights", "fetch", "--encoders", "maxvit_tiny"]) == errors.EXIT_BAD_INPUT
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("heritage weights: cannot download the weights of maxvit_tiny "
                                                   "(http://127.0.0.1:9 unreachable")
    assert "run `python -m heritage weights fetch --encoders maxvit_tiny` where the Hub is reachable" in err
    assert list(empty_hub_cache.iterdir()) == []


def test_offline_fetch_and_check_say_so_and_never_ask_the_hub(fake_hub, monkeypatch, capfd):
    served_weights(fake_hub)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert cli.main(["weights", "fetch", "--encoders", "swin_tiny"]) == errors.EXIT_BAD_INPUT
    assert "(HF_HUB_OFFLINE is set)" in capfd.readouterr().err
    assert cli.main(["weights", "check", "--encoders", "swin_tiny"]) == errors.EXIT_FAILED
    out, err = capfd.readouterr()
    assert out.split()[:2] == ["swin_tiny", "missing"] and err.count("\n") == 1
    assert fake_hub.requests == []


def refuse_to_prepare_data(*args: object, **kwargs: object) -> None:
    raise AssertionError("the data was being prepared")


def test_a_full_paper_without_the_weights_fails_before_anything_naming_them(fake_hub, tmp_path, monkeypatch, capfd):
    # The plan's pretrained encoders, from the POC files (the full profile trains from ImageNet weights).
    planned = list(dict.fromkeys(s.encoder for s in config.plan_settings("full") if s.pretrained))
    assert set(planned) == set(registry.ENCODERS) and all(s.pretrained for s in config.plan_settings("full"))
    assert not any(s.pretrained for s in config.plan_settings("smoke"))
    files = served_weights(fake_hub)
    monkeypatch.setattr(paper, "prepare_data", refuse_to_prepare_data)  # the check comes first
    argv = ["paper", "--profile", "full", "--data-dir", str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs"),
            "--paper-dir", str(tmp_path / "paper")]
    assert cli.main(argv) == errors.EXIT_BAD_INPUT
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"need the ImageNet weights of {', '.join(planned)}, which are not in" in err
    assert f"`python -m heritage weights fetch --encoders {' '.join(planned)}`" in err
    assert not any((tmp_path / name).exists() for name in ("data", "runs", "paper"))  # nothing prepared or run
    assert fake_hub.requests == []  # the check reads the cache only

    files["convnext_tiny"].download()
    with pytest.raises(pretrained_weights.PretrainedWeightsUnavailable) as refused:
        paper.check_plan("full", None, None)
    assert "convnext_tiny" not in str(refused.value) and "--encoders " + " ".join(planned[1:]) in str(refused.value)
    paper.check_plan("full", None, ["pretrained=false"])  # from scratch: nothing to fetch
    paper.check_plan("full", ["poc58_baseline"], ["pretrained=false", "epochs=2"])
