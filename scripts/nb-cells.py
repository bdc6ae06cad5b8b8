"""Prints a notebook's cells without their outputs: git's textconv for notebooks (.gitattributes), so
`git diff` after re-running a notebook shows nothing unless a cell itself changed. scripts/setup
registers it (`git config diff.ipynb.textconv`); `git diff --no-textconv` shows the outputs too."""
import json
import sys

nb = json.load(open(sys.argv[1], encoding="utf-8"))
for i, cell in enumerate(nb.get("cells", [])):
    source = cell.get("source", "")
    print(f"# ---- cell {i} ({cell.get('cell_type')}) ----")
    print(source if isinstance(source, str) else "".join(source))
