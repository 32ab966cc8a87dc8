# The trainer image: the NGC PyTorch container plus this project's `trainer` package.
#
# The base brings torch, torchvision, CUDA, cuDNN and NCCL built and tested together; this file
# never reinstalls them (`--no-deps`), and adds only the trainer's light dependencies the base lacks.
# Pinned: 24.12 ships torch 2.6 / CUDA 12.6, which runs on the T4 (Turing) with the DLAMI's driver.
#
#   docker build -t orch-trainer .                                # what `orch launch` does, on the instance
#   docker run --gpus all --shm-size 8g -v $PWD/data:/data:ro -v $PWD/out:/outputs \
#       orch-trainer train --data /data --out /outputs --resume auto
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:24.12-py3
FROM ${BASE_IMAGE}

# NGC images let pip write to the system interpreter; newer pips refuse without this.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg

WORKDIR /opt/orch-trainer
COPY pyproject.toml setup.py README.md ./
COPY trainer ./trainer

# trainer._jpegcrop (partial JPEG decoding) is built only against Debian's jpeg-6b ABI libjpeg; the
# NGC images are Ubuntu (libjpeg-turbo8, the jpeg-8 ABI), where it segfaulted on a GPU machine
# (trainer/_jpegcrop.c says more), so here the install goes on without it and training decodes
# whole images with simplejpeg; the build log says which.

# Install the trainer without touching torch, then only the light deps that are missing (a base
# with everything, like the NGC image or the test base, needs no network here).
RUN python3 -m pip install --no-deps --no-build-isolation . \
 && missing="$(python3 -c 'import importlib.util as u; m={"numpy":"numpy","PIL":"pillow","simplejpeg":"simplejpeg","matplotlib":"matplotlib","scipy":"scipy","typer":"typer","rich":"rich","onnx":"onnx","onnxscript":"onnxscript"}; print(" ".join(p for mod, p in m.items() if u.find_spec(mod) is None))')" \
 && if [ -n "$missing" ]; then python3 -m pip install $missing; fi \
 && python3 -c "import torch, torchvision, trainer.cli; from trainer.decode import jpeg_decoder; print('JPEG crops decoded', jpeg_decoder())" \
 && rm -rf build *.egg-info

# A non-root user. orch runs the container as the owner of the outputs folder (--user), so files
# written to the mounted /outputs belong to the SSH user on the instance; HOME must not matter.
ARG UID=1000
RUN (getent passwd ${UID} >/dev/null || useradd --uid ${UID} --create-home --shell /bin/sh trainer) \
 && mkdir -p /data /outputs && chmod 1777 /outputs
USER ${UID}
ENV HOME=/tmp
WORKDIR /outputs

ENTRYPOINT ["trainer"]
CMD ["--help"]
