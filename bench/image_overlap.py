"""What pulling the trainer image while the dataset moves saves, against one after the other.

    sudo python bench/image_overlap.py                       # 300 MB image layer, 300 MB of data, 2 rounds
    sudo python bench/image_overlap.py --image-mb 1000 --data-mb 1000 --rounds 3

Real parts, all on this machine: a Docker engine (the one tests/fixtures/dockerd.py starts or finds),
Debian's docker-registry on loopback standing in for ECR's registry, an sshd on loopback standing in
for the instance (reached through a proxy command, as the tests do). The image is a busybox base plus
one layer of random bytes (incompressible, like most of a CUDA image), pushed once before timing.
Each round, in turn: the image pull alone, the sync alone, both one after the other (the baseline,
as before this change) and both at once (job/start.py's way). Before each, the engine forgets the
image and the instance forgets the data.

Printed: the median of each, and `ratio overlapped/sequential` (below 1: time saved). On loopback the
pull and the sync share this machine's cores and disk; on AWS they don't share a bottleneck (the pull
is in-region from ECR, the sync comes from the laptop or S3), so the saving there is nearer
min(pull, sync): see the README's figure.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator import assets  # noqa: E402
from orchestrator.job.start import _Background, _trainer_image  # noqa: E402
from orchestrator.machines.image import ensure_image  # noqa: E402
from orchestrator.machines.instance import InstanceMachine  # noqa: E402
from orchestrator.records import ImageRegistry, JobSpec  # noqa: E402
from orchestrator.remote.ssh import connect  # noqa: E402
from tests.fixtures.dockerd import start_engine, stop_engine  # noqa: E402
from tests.fixtures.registry import running_registry  # noqa: E402
from tests.fixtures.sshd import SshdServer, make_client_key  # noqa: E402
from tests.fixtures.tiny_instance import import_busybox  # noqa: E402

AWS = '#!/bin/sh\n[ "$1 $2" = "ecr get-login-password" ] && { echo bench-token; exit 0; }\nexit 2\n'


def build_context(root: Path, base: str, layer_mb: int) -> Path:
    (root / "trainer").mkdir(parents=True)
    (root / "blob").mkdir()
    with open(root / "blob" / "weights.bin", "wb") as f:
        for _ in range(layer_mb):
            f.write(os.urandom(1 << 20))
    (root / "trainer" / "__init__.py").write_text(f"# {uuid.uuid4()}\n")
    (root / "Dockerfile").write_text(f"ARG BASE_IMAGE={base}\nFROM ${{BASE_IMAGE}}\nCOPY trainer /opt/trainer\n"
                                     "ENTRYPOINT [\"/bin/busybox\", \"echo\", \"trainer\"]\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-mb", type=int, default=300)
    ap.add_argument("--data-mb", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="orch-bench-overlap-"))
    engine = start_engine()
    client = engine.client()
    server = SshdServer(work / "sshd")
    server.start()
    try:
        key = make_client_key(work / "keys")
        server.authorize(key.with_name(key.name + ".pub").read_text())
        (server.bin_dir / "docker").write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {engine.base_url} \"$@\"\n")
        (server.bin_dir / "aws").write_text(AWS)
        for tool in ("docker", "aws"):
            (server.bin_dir / tool).chmod(0o755)
        (work / "registry").mkdir()
        with running_registry(work / "registry") as reg:
            base = import_busybox(client, "orch-bench-tiny:1")
            # The image layer is in the build context: the Dockerfile copies trainer/ only, so add it there.
            context = build_context(work / "context", base, args.image_mb)
            shutil.move(str(context / "blob" / "weights.bin"), context / "trainer" / "weights.bin")
            assets.root = lambda: context  # what the image is built from (the checkout, normally)
            tag, h = ensure_image(client, context)
            registry = ImageRegistry(f"{reg.host}/orch-trainer", "us-east-1")
            remote = f"{registry.repository}:{h}"
            client.api.tag(tag, registry.repository, h)
            for _ in client.api.push(registry.repository, tag=h, stream=True, decode=True):
                pass
            data = work / "data"
            (data / "train" / "c0").mkdir(parents=True)
            for i in range(args.data_mb):
                (data / "train" / "c0" / f"{i:05d}.bin").write_bytes(os.urandom(1 << 20))

            endpoint = server.endpoint(key, work / "known_hosts")
            machine = InstanceMachine("bench", endpoint)
            spec = JobSpec(job="bench", data=str(data), gpus=False, remote_root=str(work / "remote"), registry=registry)
            quiet = lambda _m: None  # noqa: E731

            def fresh() -> None:
                for ref in (tag, remote):
                    try:
                        client.images.remove(ref, force=True)
                    except Exception:
                        pass
                shutil.rmtree(work / "remote", ignore_errors=True)
                (work / "remote" / "bench" / "data").mkdir(parents=True)

            with connect(endpoint) as session:
                runner = machine.runner(session)
                data_dir = str(work / "remote" / "bench" / "data")

                def pull() -> None:
                    assert _trainer_image(machine, session, runner, spec, quiet).how == "pulled"

                def sync() -> None:
                    machine.place_data(session, runner, spec, data_dir, "", "", quiet)

                def sequential() -> None:
                    pull()
                    sync()

                def overlapped() -> None:
                    image = _Background(lambda said: _trainer_image(machine, session, runner, spec, said), quiet)
                    sync()
                    assert image.result().how == "pulled"

                runs = {"pull alone": pull, "sync alone": sync, "sequential (before)": sequential,
                        "overlapped (job/start.py)": overlapped}
                times: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(args.rounds):
                    for name, run in runs.items():
                        fresh()
                        t0 = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - t0)
            fresh()
    finally:
        client.close()
        server.stop()
        stop_engine(engine)
        shutil.rmtree(work, ignore_errors=True)

    print(f"image layer {args.image_mb} MB (random bytes), dataset {args.data_mb} MB in {args.data_mb} files, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs")
    width = max(len(n) for n in times)
    for name, values in times.items():
        print(f"{name.ljust(width)}  {statistics.median(values):6.1f} s   ({', '.join(f'{v:.1f}' for v in values)})")
    seq, ovl = statistics.median(times["sequential (before)"]), statistics.median(times["overlapped (job/start.py)"])
    best = max(statistics.median(times["pull alone"]), statistics.median(times["sync alone"]))
    print(f"ratio overlapped/sequential: {ovl / seq:.2f}x  (the floor, max(pull, sync)/sequential, is {best / seq:.2f}x)")


if __name__ == "__main__":
    main()
