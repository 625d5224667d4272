"""gliomil: dual-stream multiple-instance learning of glioma grade from multi-modal brain MRI."""

import hashlib
import sys
from pathlib import Path

__version__ = "0.1.0"


def code_version() -> dict:
    """The gliomil version, and a SHA-256 over the source of every gliomil module loaded in this process (names
    and bytes, in name order). In a stage those are exactly its code deps in ``dvc.yaml`` (tests/test_dvc_yaml.py):
    the bundle records them, and a train stage keys its resume state by them."""
    modules = sorted(name for name in sys.modules if name.startswith("gliomil."))
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode() + b"\0" + Path(sys.modules[name].__file__).read_bytes() + b"\0")
    return {"gliomil": __version__, "modules": modules, "source_sha256": digest.hexdigest()}
