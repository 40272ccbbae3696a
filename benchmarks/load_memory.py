"""Peak memory of ``load_pretrained_gpt2``, relative to the size of the weights file (ch05_pretraining, 5.5).

Writes a GPT-2-shaped ``model.safetensors`` in Hugging Face's layout (random weights; default the 355M,
gpt2-medium, shape: 1.4 GB) to a temporary folder, then loads it with ``load_pretrained_gpt2`` in a fresh
Python process and measures how much that process's peak resident memory (Linux ``VmHWM``; ``ru_maxrss``
elsewhere) grows during the load, from a baseline taken after importing torch and llmscratch. A loader that
holds two copies of the weights shows a ratio of about 2x; the target is under 1.3x.

    python benchmarks/load_memory.py               # 355M
    python benchmarks/load_memory.py --size 124M   # or 774M, 1558M (6.4 GB of disk and memory)
    python benchmarks/load_memory.py --format pth  # the same weights as the book's torch.save state dict

The last line is ``ratio: N.NNx``. The file is written tensor by tensor, so this script itself stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _clone import SHARED  # first: this clone's llmscratch

import torch  # noqa: E402

from llmscratch.gpt2_weights import gpt2_safetensors_shapes, pretrained_gpt2_config  # noqa: E402


def write_random_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> int:
    """Write float32 random tensors in the safetensors format (8-byte header length, JSON header, data)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = 4 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data starts 8-byte aligned
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
        for shape in shapes.values():  # one tensor in memory at a time
            f.write((torch.randn(shape, generator=generator) * 0.02).numpy().tobytes())
    return path.stat().st_size


# Runs in a fresh interpreter: baseline after the imports, then the load, then the peak.
CHILD = textwrap.dedent("""
    import json, os, resource, sys, time
    sys.path.insert(0, {shared!r})
    import torch
    import llmscratch.gpt2_weights as gw

    def status():
        fields = {{}}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if value.strip().endswith("kB"):
                        fields[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return fields

    def peak():
        return status().get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    reset = False
    try:  # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    before = status().get("VmRSS") if reset else peak()
    start = time.perf_counter()
    model = gw.load_pretrained_gpt2({path!r})
    seconds = time.perf_counter() - start
    after = status()
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({{"before": before, "peak": peak(), "rss_after": after.get("VmRSS"),
                      "anon_after": after.get("RssAnon"), "file_after": after.get("RssFile"),
                      "seconds": seconds, "n_params": n_params, "reset": reset}}))
""")


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="355M", choices=["124M", "355M", "774M", "1558M"])
    parser.add_argument("--format", default="safetensors", choices=["safetensors", "pth"],
                        help="Hugging Face's model.safetensors (default) or a torch.save state dict of GPTModel")
    args = parser.parse_args(argv)
    mb = 1024 ** 2
    with tempfile.TemporaryDirectory(prefix="gpt2-load-memory-") as tmp:
        path = Path(tmp) / "model.safetensors"
        file_size = write_random_safetensors(path, gpt2_safetensors_shapes(pretrained_gpt2_config(args.size)))
        if args.format == "pth":  # convert (in this process), then measure loading the .pth
            from llmscratch.gpt2_weights import load_pretrained_gpt2

            model = load_pretrained_gpt2(path)
            path.unlink()
            path = Path(tmp) / f"gpt2-{args.size}.pth"
            torch.save(model.state_dict(), path)
            del model
            file_size = path.stat().st_size
        code = CHILD.format(shared=str(SHARED), path=str(path))
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"the loading process failed:\n{out.stderr}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = path.name
    growth = r["peak"] - r["before"]
    ratio = growth / file_size
    print(f"GPT-2 {args.size}-shaped {name} (random float32 weights), "
          f"{r['n_params'] / 1e6:.1f}M parameters, torch {torch.__version__}")
    print(f"file size:              {file_size / mb:9.1f} MiB")
    print(f"peak RSS growth (load): {growth / mb:9.1f} MiB   "
          f"({'VmHWM reset before the load' if r['reset'] else 'peak after minus peak before'})")
    if r.get("anon_after") is not None:
        print(f"RSS after the load:     {r['rss_after'] / mb:9.1f} MiB   (anonymous {r['anon_after'] / mb:.1f}, "
              f"file-backed {r['file_after'] / mb:.1f})")
    print(f"load time:              {r['seconds']:9.2f} s")
    print(f"ratio: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
