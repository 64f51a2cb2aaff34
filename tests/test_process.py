"""heritage.process: the environment heritage's own processes set, and where they set it."""

from __future__ import annotations

import json
import subprocess
import sys

from heritage import process


def test_quieten_adds_the_quiet_environment_and_keeps_what_the_user_set():
    environ = {"PYTHONWARNINGS": "error", "HOME": "/home/a"}
    process.quieten(environ)
    assert environ == {"PYTHONWARNINGS": "error", "HOME": "/home/a", "NO_ALBUMENTATIONS_UPDATE": "1"}


def test_python_m_heritage_sets_the_quiet_environment_and_importing_it_does_not(tmp_path):
    code = f"""
import json, os
from heritage import cli
names = {sorted(process.QUIET_ENVIRONMENT)!r}
imported = {{name: os.environ.get(name) for name in names}}
try:
    cli.main(["--help"])
except SystemExit:
    pass
print(json.dumps([imported, {{name: os.environ.get(name) for name in names}}]))
"""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported, ran = json.loads(done.stdout.splitlines()[-1])
    assert imported == dict.fromkeys(process.QUIET_ENVIRONMENT) and ran == process.QUIET_ENVIRONMENT


def test_the_project_kernel_starts_in_the_quiet_environment():
    from jupyter_client.kernelspec import KernelSpecManager

    from heritage.pipeline import execution

    execution.ensure_kernel()  # what make env and paper run: registers it, or re-registers an older spec
    assert KernelSpecManager().get_kernel_spec(execution.KERNEL_NAME).env == process.QUIET_ENVIRONMENT
