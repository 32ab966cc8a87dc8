"""The one compiled part: trainer._jpegcrop (partial JPEG decoding, see trainer/_jpegcrop.c).

Everything else is declared in pyproject.toml. The extension is optional: where libjpeg's
headers or a C compiler are missing (a laptop that only runs `orch`), the install goes on
without it and trainer/decode.py decodes whole images with simplejpeg instead.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("trainer._jpegcrop", ["trainer/_jpegcrop.c"], libraries=["jpeg"], optional=True)])
