"""The package's shape, as docs/DESIGN.md describes it: imports point down a layer table, there
are no import circles, and only `myllm.rundir` spells paths inside a run directory."""

import ast
from pathlib import Path

import myllm

SRC = Path(myllm.__file__).parent

# Lowest first. A module may import from its own layer or below, never above.
LAYERS = [
    ("foundation", ["myllm", "errors", "io", "records", "losses", "device", "config"]),
    ("parts", ["tokenizer", "chat", "model", "plan", "universe", "data", "train.lora", "train.checkpoint",
               "train.optim", "train.distributed", "train.sharded"]),
    ("run directory", ["rundir"]),
    ("inference", ["infer"]),
    ("metrics and reports", ["evals", "data.report"]),
    ("training", ["train"]),
    ("exports and serving", ["export", "serve"]),
    ("the pipeline", ["run"]),
    ("command line", ["cli", "__main__"]),
]

# Files inside a folder whose format a module owns (wherever that folder is, e.g. the shards of a
# data phase), and the files of a Hugging Face directory: not paths of the run directory.
FORMAT_FILES = {
    "data/shards.py": {"index.json", "manifest.json"},
    "data/corpus.py": {"manifest.json"},
    "data/prepare.py": {"manifest.json"},
    "tokenizer.py": {"tokenizer.json"},
    "records.py": {"stages.json"},
    "export/hf.py": {"tokenizer.json"},
}
RUN_DIR_NAMES = {"checkpoints", "corpus", "tokenizer", "shards", "evals", "tasks", "export", "quantized", "plots",
                 "hf", "config.toml", "stages.json", "metrics.jsonl", "summary.json", "report.md", "universe.json",
                 "manifest.json", "tokenizer.json", "index.json"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts) or "myllm"


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"myllm.{module} is in no layer of tests/test_structure.py: add it"
    return best


def imports() -> dict[str, set[str]]:
    """Module -> the myllm modules it imports (at the top or inside functions)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t != "myllm" and not t.startswith("myllm."):
                    continue
                t = t.removeprefix("myllm").removeprefix(".") or "myllm"
                while t not in modules and "." in t:
                    t = t.rpartition(".")[0]
                if t in modules and t != name and not name.startswith(t + "."):
                    found.add(t)
        graph[name] = found
    return graph


def test_imports_point_down_the_layers():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in imports().items() for t in targets if layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            assert state.get(t) != 1, "import circle: " + " -> ".join(path[path.index(t):] + [m, t]) \
                if t in path else f"import circle through {m} -> {t}"
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_only_rundir_spells_run_directory_paths():
    """A run-directory name as a path operand (`x / "checkpoints"`) or a whole string constant."""
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "rundir.py":
            continue
        allowed = FORMAT_FILES.get(rel, set())
        for node in ast.walk(ast.parse(path.read_text())):
            operands = [node.left, node.right] if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) else []
            for op in operands:
                if isinstance(op, ast.Constant) and op.value in RUN_DIR_NAMES and op.value not in allowed:
                    found.append(f"{rel}:{node.lineno}: / {op.value!r}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                    and node.value in RUN_DIR_NAMES and node.value not in allowed:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "spell these with myllm.rundir.RunDir:\n" + "\n".join(sorted(set(found)))
