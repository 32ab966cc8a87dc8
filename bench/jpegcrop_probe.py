"""Does the built trainer._jpegcrop decode in a process that has torch, torchvision and Pillow loaded,
and which libjpeg do its `jpeg_*` calls bind to? (A loader worker segfaulted with it on an H200
machine, 2026-12-04; this separates "the extension" from "another libjpeg in the process".)

    python bench/jpegcrop_probe.py          # after `python setup.py build_ext --inplace`

Each case runs in a fresh process under LD_DEBUG=bindings; the printed line says whether the
decode finished and which shared object `jpeg_crop_scanline` was bound to.
"""
from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import tempfile

CASES = {
    "alone": "",
    "after torch": "import torch",
    "after torch, torchvision.io, PIL": "import torch, torchvision, torchvision.io, PIL.Image",
    "the same, extension opened RTLD_DEEPBIND": "import torch, torchvision, torchvision.io, PIL.Image, sys, os; "
                                               "sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)",
}
DECODE = """{pre}
import trainer._jpegcrop as j
data = open({path!r}, 'rb').read()
out = bytearray(100 * 120 * 3)
j.decode_crop(data, out, 2, 10, 20, 120, 100, True)
print('decoded', sum(out) % 9973)
"""


def main() -> int:
    import numpy as np
    from PIL import Image

    work = tempfile.mkdtemp()
    path = os.path.join(work, "probe.jpg")
    pixels = (np.arange(375 * 500 * 3) % 251).astype("uint8").reshape(375, 500, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    open(path, "wb").write(buf.getvalue())
    for so in glob.glob(os.path.join(os.path.dirname(__file__), "..", "trainer", "_jpegcrop*.so")):
        print(subprocess.run(["ldd", so], capture_output=True, text=True).stdout.strip())
    failed = 0
    for i, (name, pre) in enumerate(CASES.items()):
        log = os.path.join(work, f"ld-{i}")
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", DECODE.format(pre=pre, path=path)],
                           capture_output=True, text=True, env={**os.environ, "LD_DEBUG": "bindings",
                                                                 "LD_DEBUG_OUTPUT": log})
        bound = set()
        for f in glob.glob(log + ".*"):
            for line in open(f, errors="replace"):
                if "_jpegcrop" in line and "jpeg_crop_scanline" in line:
                    bound.add(line.split("to ", 1)[-1].split(" [")[0].strip())
        result = r.stdout.strip() or f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:] or ''}"
        failed += r.returncode != 0
        print(f"{name:45s} {result:30s} jpeg_crop_scanline -> {', '.join(sorted(bound)) or '?'}")
        if r.returncode != 0:
            print("   " + "\n   ".join(r.stderr.strip().splitlines()[-12:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
