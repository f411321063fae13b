"""Render nbs/index.ipynb to README.md the way nbdev_readme would, without Quarto (not installable everywhere).

Markdown cells are copied; code cells are shown as code; `#| hide` cells are run but not shown; cells marked
`#| output: asis` are run and their printed output is inserted as Markdown (Quarto's meaning of that option)."""
import contextlib, io, json, re
from pathlib import Path

def directives(src): return [l[2:].strip() for l in src.splitlines() if l.startswith("#|")]
def body(src): return "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()

def render(nb_path="nbs/index.ipynb"):
    ns, parts = {}, []
    for cell in json.loads(Path(nb_path).read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown": parts.append(src); continue
        d = directives(src)
        if "hide" in d or "output: asis" in d:
            out = io.StringIO()
            with contextlib.redirect_stdout(out): exec(body(src), ns)
            if "output: asis" in d: parts.append(out.getvalue().strip())
        elif not any(re.match(r"export", x) for x in d) and body(src): parts.append(f"```python\n{body(src)}\n```")
    header = "<!-- Generated from nbs/index.ipynb by tools/render_readme.py: edit the notebook, not this file. -->\n\n"
    return header + "\n\n".join(p for p in parts if p) + "\n"

if __name__ == "__main__": Path("README.md").write_text(render())
