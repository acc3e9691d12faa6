"""The README and docs/ as a reader meets them: every relative link leads to a file of the checkout, and the
result files behind the edge numbers describe the models that are shipped."""
import hashlib
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list:
    """Targets of the markdown links and images in ``text`` that point into the checkout (no URLs, no anchors alone)."""
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"[a-z]+://|mailto:", t)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(document):
    missing = [t for t in relative_links(document.read_text()) if not (document.parent / t).exists()]
    assert missing == []


def test_the_link_finder_sees_links_and_images_but_not_urls():
    text = "[a](docs/x.md#part) ![b](img.png) [c](https://example.org/y) [d](#local)"
    assert relative_links(text) == ["docs/x.md", "img.png"]


@pytest.mark.parametrize("name", ["melcnn", "melcnn-seed1", "melcnn-seed2", "audionet"])
def test_the_edge_results_describe_the_shipped_model_files(name):
    """Replacing a shipped model without rerunning its export report, benchmarks.edge and the aarch64
    check would leave the README quoting another model's numbers."""
    shipped = REPO / "edge" / "models" / f"{name}-int8.onnx"
    report = json.loads((REPO / "edge" / "models" / f"{name}.report.json").read_text())
    edge = json.loads((REPO / "benchmarks" / "results" / "edge.json").read_text())["models"][f"{name}-int8"]
    assert report["int8"]["bytes"] == edge["bytes"] == shipped.stat().st_size
    aarch64 = json.loads((REPO / "benchmarks" / "results" / "aarch64.json").read_text())
    checked = aarch64["model_sha256"].get(shipped.relative_to(REPO).as_posix())
    assert checked in (None, hashlib.sha256(shipped.read_bytes()).hexdigest())


def test_the_aarch64_check_covers_the_listeners_default_models():
    """A Raspberry Pi runs what edge.listen runs without --model: that set is what the aarch64 check must have run."""
    from edge.listen import default_models

    aarch64 = json.loads((REPO / "benchmarks" / "results" / "aarch64.json").read_text())
    assert aarch64["models"] == [path.relative_to(REPO).as_posix() for path in default_models()]
    assert aarch64["windows"] >= 50 and aarch64["same_top_label_as_x86_64"] == aarch64["windows"]
