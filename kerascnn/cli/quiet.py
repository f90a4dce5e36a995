"""TensorFlow's start-up log lines, swallowed for a normal run of the command (``--verbose`` keeps them)."""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile


@contextlib.contextmanager
def _stderr_parked():
    """File descriptor 2 points at a temporary file inside the block; what was written there is
    replayed on stderr if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Loads TensorFlow with fd 2 parked: its C++ libraries write start-up lines there (absl's "All
    log messages before absl::InitializeLog()", oneDNN and "Could not find cuda drivers" notices)
    before any logging setting applies, and CUDA's "failed call to cuInit" error when devices are
    first listed on a machine without a GPU (so they are listed here too, on such a machine; a
    GPU machine keeps CUDA's errors, which say why its GPU is not used)."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package... of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        no_gpu = not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/dxg")  # dxg: WSL2's GPU
        with _stderr_parked():
            self.loader.exec_module(module)
            if no_gpu:
                module.config.list_physical_devices()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds TensorFlow, once, for :class:`_QuietLoader`; TensorFlow is imported only by the
    commands that need it, when they need it, as before."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_framework() -> None:
    """A normal run prints only kerascnn's output: TensorFlow's start-up lines are swallowed when
    it loads (``--verbose`` skips this). kerascnn's own messages come later and are untouched.
    ``import kerascnn`` alone leaves TensorFlow's logging as the user set it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
