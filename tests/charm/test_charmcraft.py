"""charmcraft itself reads the charm's charmcraft.yaml (``charmcraft expand-extensions``, offline): the file a
``charmcraft pack`` would build from is valid, and a broken one is refused. charmcraft lives in its own
virtualenv (.venv/charmcraft, made by scripts/bootstrap.sh) because it pins its own libraries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARM = ROOT / "charms" / "trust-proxy"
CHARMCRAFT = ROOT / ".venv" / "charmcraft" / "bin" / "charmcraft"


def _expand(charm_dir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    assert CHARMCRAFT.exists(), f"{CHARMCRAFT} is missing: run scripts/bootstrap.sh (make test does)"
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home)}  # its logs stay out of the real home
    return subprocess.run([str(CHARMCRAFT), "expand-extensions"], cwd=charm_dir, capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def test_charmcraft_accepts_the_charm(tmp_path: Path) -> None:
    proc = _expand(CHARM, tmp_path)
    assert proc.returncode == 0, proc.stderr
    expanded = yaml.safe_load(proc.stdout)
    assert expanded["name"] == "trust-proxy" and expanded["type"] == "charm"
    assert set(expanded["actions"]) == {"verify-ssh-credentials", "identity", "activate", "attest"}
    assert set(expanded["config"]["options"]) == {"ssh-hostname", "ssh-username", "ssh-password", "ssh-private-key",
                                                  "ssh-port"}  # fmt: skip


def test_charmcraft_refuses_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "charm"
    shutil.copytree(CHARM, broken, ignore=shutil.ignore_patterns("__pycache__"))
    text = (broken / "charmcraft.yaml").read_text()
    (broken / "charmcraft.yaml").write_text(text.replace("type: charm\n", "type: charm\nbogus-key: 1\n", 1))
    proc = _expand(broken, tmp_path)
    assert proc.returncode != 0 and "bogus-key" in proc.stderr
