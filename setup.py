"""The one compiled part, trainer._jpegcrop (partial JPEG decoding, see trainer/_jpegcrop.c), and the
bundle a wheel carries (orchestrator/assets.py: infra/, the Dockerfile and the trainer's build context).

Everything else is declared in pyproject.toml. The extension is optional: where libjpeg's
headers or a C compiler are missing (a laptop that only runs `orch`), the install goes on
without it and trainer/decode.py decodes whole images with simplejpeg instead.
"""
import importlib.util
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _assets():
    spec = importlib.util.spec_from_file_location("_orch_assets", HERE / "orchestrator" / "assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithBundle(build_py):
    """build_py, then a copy of what orch needs at run time under orchestrator/_bundle/ in the build."""

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        if not (HERE / "orchestrator" / "assets.py").is_file():
            return  # the trainer image's build context: the trainer alone, nothing of orch's to bundle
        assets = _assets()
        bundle = Path(self.build_lib) / "orchestrator" / assets.BUNDLE
        shutil.rmtree(bundle, ignore_errors=True)
        for name in assets.members(HERE):
            target = bundle / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(HERE / name, target)


setup(
    ext_modules=[Extension("trainer._jpegcrop", ["trainer/_jpegcrop.c"], libraries=["jpeg"], optional=True)],
    cmdclass={"build_py": BuildWithBundle},
)
