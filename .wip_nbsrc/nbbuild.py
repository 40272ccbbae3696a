"""Build a course notebook from a simple cell-script and optionally execute it (authoring tool, not in repo).

Format: cells start with a line `#%% md`, `#%% code` or `#%% code parameters`.
`{{SETUP}}` as the whole body of a code cell becomes the canonical setup cell; `{{BADGE}}` in markdown becomes
the Colab badge for the output path.
"""
import json, os, subprocess, sys
from pathlib import Path

sys.path.insert(0, "/work/main/tests")
import notebook_conventions as nc
import nbformat

def parse(text):
    cells = []
    cur = None
    for line in text.splitlines():
        if line.startswith("#%% "):
            if cur: cells.append(cur)
            parts = line[4:].split()
            cur = {"kind": parts[0], "tags": parts[1:], "lines": []}
        else:
            assert cur is not None, "file must start with a #%% marker"
            cur["lines"].append(line)
    if cur: cells.append(cur)
    return cells

def build(src: Path, out: Path):
    cells = []
    for c in parse(src.read_text(encoding="utf-8")):
        body = "\n".join(c["lines"]).strip("\n")
        if c["kind"] == "md":
            body = body.replace("{{BADGE}}", nc.colab_badge(out.resolve()))
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            if body.strip() == "{{SETUP}}":
                body = nc.SETUP_CELL
            cell = nbformat.v4.new_code_cell(body)
            if c["tags"]:
                cell.metadata["tags"] = c["tags"]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    # stable cell ids
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    nbformat.write(nb, out)

def execute(out: Path, smoke=False):
    env = dict(os.environ)
    env.setdefault("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken_cache")
    env.setdefault("LLMSCRATCH_DATA_MIRROR", "/work/shared/data")
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "")
    if smoke: env["LLMSCRATCH_SMOKE"] = "1"
    else: env.pop("LLMSCRATCH_SMOKE", None)
    jup = "/work/main/.venv/bin/jupyter"
    subprocess.run([jup, "nbconvert", "--to", "notebook", "--execute", "--inplace",
                    "--ExecutePreprocessor.timeout=3600", "--ExecutePreprocessor.record_timing=False",
                    "--ExecutePreprocessor.kernel_name=python3", str(out.resolve())], check=True, env=env, cwd=out.parent)
    nb = json.loads(out.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
    nb["metadata"]["language_info"] = {"name": "python"}
    out.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

if __name__ == "__main__":
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    build(src, out)
    if "--execute" in sys.argv:
        execute(out, smoke="--smoke" in sys.argv)
    print("wrote", out)
