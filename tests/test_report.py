"""The run report card: sections, plots, the `report` command, and rows added by later stages."""

import json
import re
import shutil

import pytest

from myllm.cli import main
from myllm.evals.report import SECTIONS, write_run_report
from myllm.plan import param_counts
from myllm.records import StageRecords
from myllm.run import run
from myllm.rundir import RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A short real run (20 steps of the nano model on the tiny folder corpus), report written by `run`."""
    out = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_data, out)
    run(out, show_progress=False, log=lambda _: None)
    return out


def images(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def table_row(report: str, name: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_of_a_real_run_has_every_section_and_its_plots(trained_run):
    report = (trained_run / "report.md").read_text()  # written by `myllm run` itself
    for section in SECTIONS:
        assert f"\n## {section}\n" in report
    summary = json.loads((trained_run / "summary.json").read_text())
    assert f"{param_counts(RunDir(trained_run).config().model)['total']:,}" in report
    assert "ln(V) = 6.238" in report  # vocab 512
    base = table_row(report, "base (pretrain)")
    assert base[1] == f"{summary['val_bpb']:.4f}" and base[2] == f"{summary['test_bpb']:.4f}"
    assert base[3] == "-" and base[5] == "-"  # a folder corpus has no known floor and no probes
    assert "[corpus report](corpus/report.md)" in report
    assert table_row(report, "train")[1] == f"{summary['corpus']['train']['documents']:,}"
    stages = StageRecords(trained_run).stages
    assert table_row(report, "pretrain")[1] == f"{stages['pretrain']['seconds']:.1f}"
    samples = report.split("## Samples")[1].split("## Plots")[0].splitlines()
    assert len([x for x in samples if x.startswith("| ") and x != "| prompt | completion |"]) == 3
    assert any(x.startswith("| (empty) |") for x in samples)  # the unprompted sample
    paths = images(report)
    assert sorted(paths) == ["plots/grad_norm.png", "plots/loss.png", "plots/lr.png", "plots/throughput.png"]
    for rel in paths:
        data = (trained_run / rel).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_report_command_prints_its_path(trained_run, capsys):
    (trained_run / "report.md").unlink()
    assert main(["report", "--run", str(trained_run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(trained_run / "report.md") and (trained_run / "report.md").is_file()


def test_report_without_summary_is_one_line_error(tiny_run, capsys):
    assert main(["report", "--run", str(tiny_run)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "summary.json" in err[0]
    assert "`myllm run" in err[0] and "`myllm eval" in err[0]
    assert not (tiny_run / "report.md").exists()


def test_later_stages_add_rows_floor_and_curves(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["floor_val_bpb"] = 0.5 * summary["val_bpb"]
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "evals").mkdir()
    (out / "evals" / "sft.json").write_text(json.dumps({"val_bpb": 1.25, "probe_accuracy": 0.5}))
    (out / "evals" / "dpo.json").write_text(json.dumps({"val_bpb": 1.2, "test_bpb": 1.3}))
    with open(out / "metrics.jsonl", "a") as f:
        for step in range(1, 6):
            f.write(json.dumps({"stage": "grpo", "step": step, "loss": 1.0, "lr": 1e-4, "reward_mean": step / 5,
                                "kl": 0.01 * step, "grad_norm": 0.5, "tok_s": 100.0}) + "\n")
    report = write_run_report(out).read_text()
    rows = [x.split("|")[1].strip() for x in report.split("## Evaluation")[1].split("## Samples")[0].splitlines()
            if x.startswith("| ") and not x.startswith("| stage")]
    assert rows == ["base (pretrain)", "sft", "dpo"]  # known stages in pipeline order
    base, sft = table_row(report, "base (pretrain)"), table_row(report, "sft")
    assert base[3] == f"{summary['floor_val_bpb']:.4f}" and base[4] == "2.000"
    assert sft[1] == "1.2500" and sft[2] == "-" and sft[5] == "50.0%"
    assert sft[4] == f"{1.25 / summary['floor_val_bpb']:.3f}"  # the base floor: same corpus
    assert "plots/post_grpo.png" in images(report)
    assert (out / "plots" / "post_grpo.png").read_bytes().startswith(PNG_MAGIC)
