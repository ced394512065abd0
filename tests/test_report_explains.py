"""report.md explains its verdict (issue 25, item 3): the verdict first; the plots as images whose relative links
resolve beside report.md (also in a copied run folder), the loss curve among them; the comparison report linked; the
three examples where tuning helped most and the one where it hurt most, from the per-example results; ROUGE points
everywhere a report shows a score; a cost row that says what a local run costs and agrees with the total. Built from
small results files with the steps themselves (no Prefect, no model)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from sftflow.cost.report import RunCost, TuningCost
from sftflow.evaluation import plots
from sftflow.evaluation.compare import compare_and_save
from sftflow.evaluation.results import ExampleResult, results_to_jsonl
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import counts, summarize
from sftflow.infra import layout, storage
from sftflow.judging.pairs import JudgedPair
from sftflow.judging.summary import summarize as judge_summary, verdict_line
from sftflow.records import ComparisonOutcome, Evaluation, FileSummary, Judgement, PreparedData, TunedModel
from sftflow.reporting import examples
from sftflow.reporting.links import for_prefect_ui, relative
from sftflow.reporting.run import build_report, render_markdown
from sftflow.reporting.step import write_run_report

#: tuned − base on ROUGE-L per example: e05, e11, e02 gain most (in that order), e07 loses most, e13 loses a little.
DELTAS = {"e05": 0.6, "e11": 0.5, "e02": 0.45, "e07": -0.15, "e13": -0.05}
IDS = [f"e{i:02d}" for i in range(20)]
BASE = 0.2
LONG_ARTICLE = ("How to Fix a squeaky door\n\n" + "Oil the hinge pins with a drop of oil and wipe the rest away. " * 12
                + "\n\nA last paragraph that the excerpt never reaches.")


def _delta(i: int, id_: str) -> float:
    return DELTAS.get(id_, 0.1 + 0.01 * i)  # the others gain 0.10-0.29, less than the top three


def _results(model: str, tuned: bool) -> list[ExampleResult]:
    out = []
    for i, id_ in enumerate(IDS):
        score = BASE + (_delta(i, id_) if tuned else 0.0)
        out.append(ExampleResult(id=id_, model=model, prompt_chars=100, reference=f"reference of {id_}",
                                 output=f"{'tuned' if tuned else 'base'} answer of {id_}", finish_reason="STOP",
                                 scores={m: score for m in METRICS}, attempts=1))
    return out


def _test_csv(path: Path) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "input_text", "output_text"])
        for id_ in IDS:
            article = LONG_ARTICLE if id_ == "e05" else f"How to do {id_}\n\nA short article about {id_}."
            w.writerow([id_, f"Provide a summary with about two sentences for the following article:\n\n{article}",
                        f"reference of {id_}"])
    return str(path)


def _evaluation(run: str, label: str, results: list[ExampleResult]) -> Evaluation:
    out_dir = layout.eval_dir(run, label)
    results_uri = storage.write_text(f"{out_dir}/results.jsonl", results_to_jsonl(results))
    plot_uri = storage.write_bytes(f"{out_dir}/distribution.png", plots.plot_single_distribution(results, label))
    report_uri = storage.write_text(f"{out_dir}/report.md", f"## Evaluation of {label}\n")
    return Evaluation(label=label, model=results[0].model, results_uri=results_uri, report_uri=report_uri,
                      plot_uri=plot_uri, summary=summarize(results), counts=counts(results))


def _judgement(run: str, base: list[ExampleResult], tuned: list[ExampleResult]) -> Judgement:
    judged = [JudgedPair(id=b.id, judge="local", verdict="candidate" if t.scores["rougeL"] > b.scores["rougeL"]
                         else "baseline", forward="candidate", backward="candidate",
                         baseline_rouge_l=b.scores["rougeL"], candidate_rouge_l=t.scores["rougeL"], requests=2)
              for b, t in zip(base, tuned)]
    s = judge_summary(judged, n_boot=200)
    out_dir = layout.judge_dir(run)
    return Judgement(judge="local", label="local judge", judgements_uri=f"{out_dir}/judgements.jsonl",
                     report_uri=storage.write_text(f"{out_dir}/report.md", "# judge\n"),
                     plot_uri=storage.write_bytes(f"{out_dir}/win_tie_loss.png", plots.plot_loss_curves({})),
                     summary=s, verdict=verdict_line(s, "local judge"))


LOCAL_ESTIMATE = {"total_usd": 0.55, "billed_tokens": 110_117, "method": "estimate (characters/4), local backend: "
                  "nothing is billed, priced as Vertex would", "price_source": "https://cloud.google.com/vertex-ai/"
                  "generative-ai/pricing", "backend": "local"}
SETTINGS = {"run_name": "default", "backend": "local", "price_per_million_training_tokens": 5.0, "epochs": 1,
            "adapter_size": 4, "learning_rate_multiplier": 1.0, "source_model": None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with both evaluations, the comparison, the loss plot, the judge, and its report."""
    tmp = tmp_path_factory.mktemp("explains")
    run = str(tmp / "root" / "runs" / "default")
    base, tuned = _results("base-model", False), _results("tuned-endpoint", True)
    b_ev, t_ev = _evaluation(run, "base", base), _evaluation(run, "tuned", tuned)
    compared = compare_and_save(b_ev.results_uri, t_ev.results_uri, layout.compare_dir(run), seed=0)
    storage.write_bytes(layout.loss_plot_uri(run), plots.plot_loss_curves({"train_loss": [(0, 2.0), (1, 1.0)]}))
    prepared = PreparedData(train="tr.jsonl", val="va.jsonl", test=str(tmp / "gone.csv"), cost_usd=0.55,
                            summaries=(FileSummary(kind="train", examples=400, estimated_tokens=110_117, source="t"),
                                       FileSummary(kind="val", examples=40, source="v"),
                                       FileSummary(kind="test", examples=20, source="x")))
    tuned_model = TunedModel(job="job-1", key="k", tuned_model="local:job-1", endpoint="local:job-1",
                             cost_estimate=LOCAL_ESTIMATE)
    cost = RunCost(tuning=TuningCost(estimate_usd=0.55, estimate_tokens=110_117, method=LOCAL_ESTIMATE["method"],
                                     billable_tokens=None, billed_usd=0.0, price_per_million=5.0,
                                     source=LOCAL_ESTIMATE["price_source"], local=True), evaluations=())
    report = write_run_report(run, SETTINGS, prepared, tuned_model, b_ev, t_ev, compared, cost,
                              judgement=_judgement(run, base, tuned), test_path=_test_csv(tmp / "test.csv"))
    return {"root": Path(run), "report": report, "md": storage.read_text(report.report_uri),
            "json": json.loads(storage.read_text(report.report_json_uri)), "compared": compared,
            "args": (run, prepared, tuned_model, b_ev, t_ev, compared)}


def _images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md)


def _links(md: str) -> list[str]:
    return re.findall(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)", md)


def test_the_verdict_comes_first_with_the_rouge_l_ci_and_the_judge(run):
    md, c = run["md"], run["json"]["comparison"]["metrics"]["rougeL"]
    lines = md.splitlines()
    assert lines[0] == "# sftflow run `default` (local backend)" and lines[1] == ""
    ci = f"[95% CI {100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"
    assert lines[2].startswith(f"**Tuning helped: tuned beats base on ROUGE-L by {100 * c['difference']:+.1f} points "
                               f"{ci}, p") and lines[2].endswith(", n=20.**")
    assert lines[4].startswith("- judge (local judge): tuned wins 18/20")  # the judge's verdict, right below
    first_section = md.index("\n## ")
    assert md.index("judge (local judge)") < first_section and md.index("Tuning helped") < first_section
    order = [md.index(h) for h in ("## Examples", "## Comparison", "## Plots", "## Data", "## Tuning job",
                                   "## Pairwise judge", "## Cost")]
    assert order == sorted(order)
    assert run["json"]["headline"] == lines[2].strip("*")


def test_every_plot_is_an_image_linked_relative_to_the_report_including_the_loss_curve(run, tmp_path):
    md, root = run["md"], run["root"]
    images = _images(md)
    assert images == ["tuning/loss.png", "compare/paired.png", "compare/means.png", "compare/distributions.png",
                      "judge/win_tie_loss.png", "eval/base/distribution.png", "eval/tuned/distribution.png"]
    assert {storage.join(str(root), i) for i in images} == set(run["json"]["plots"].values())  # every plot the run has
    copy = tmp_path / "copied"
    shutil.copytree(root, copy)  # a copied (or downloaded) run folder: the same links still resolve
    for target in images + _links(md):
        if not target.startswith("https://"):
            assert (root / target).is_file() and (copy / target).stat().st_size > 0, target
    assert "[compare/report.md](compare/report.md)" in md  # the comparison report, linked
    assert "The judge's report: [judge/report.md](judge/report.md)" in md
    compare_md = (root / "compare" / "report.md").read_text()
    assert _images(compare_md) == ["distributions.png", "means.png", "paired.png"]  # beside compare/report.md
    assert all((root / "compare" / i).is_file() for i in _images(compare_md))


def test_the_examples_are_the_three_largest_gains_and_the_largest_loss(run):
    md = run["md"]
    shown = re.findall(r"^### (Helped most \(\d of 3\)|Hurt most): example `(e\d\d)`", md, flags=re.M)
    assert shown == [("Helped most (1 of 3)", "e05"), ("Helped most (2 of 3)", "e11"), ("Helped most (3 of 3)", "e02"),
                     ("Hurt most", "e07")]
    assert "### Helped most (1 of 3): example `e05`, ROUGE-L 20.0 → 80.0 (+60.0 points)" in md
    assert "### Hurt most: example `e07`, ROUGE-L 20.0 → 5.0 (-15.0 points)" in md
    e05 = md[md.index("example `e05`"):md.index("example `e11`")]
    assert "> How to Fix a squeaky door\n>\n> Oil the hinge pins" in e05  # the article, its paragraphs kept
    assert "never reaches" not in e05 and "wipe the rest away. …" in e05  # cut at a sentence end, marked
    assert f"Article (excerpt; {len(LONG_ARTICLE):,} characters in all)" in e05
    assert "- **Reference:** reference of e05" in e05
    assert "- **Base answer** (ROUGE-L 20.0): base answer of e05" in e05
    assert "- **Tuned answer** (ROUGE-L 80.0): tuned answer of e05" in e05
    pairs = run["json"]["example_pairs"]
    assert [p["id"] for p in pairs["helped"]] == ["e05", "e11", "e02"] and [p["id"] for p in pairs["hurt"]] == ["e07"]
    assert pairs["hurt"][0]["difference"] == pytest.approx(-0.15)  # report.json: F-measures, as its units say


def test_rouge_is_in_points_in_every_report_and_report_json_says_its_unit(run):
    md, data, root = run["md"], run["json"], run["root"]
    for m, label in (("rouge1", "ROUGE-1"), ("rougeL", "ROUGE-L")):
        x = data["comparison"]["metrics"][m]
        row = (f"| {label} | {100 * x['baseline_mean']:.2f} | {100 * x['tuned_mean']:.2f} | "
               f"{100 * x['difference']:+.2f} | [{100 * x['ci_low']:+.2f}, {100 * x['ci_high']:+.2f}] |")
        assert row in md and row in (root / "compare" / "report.md").read_text()  # the same table, same unit
    assert "| ROUGE-L | 20.00 |" in md and "0.200" not in md
    assert "ROUGE points (F-measure × 100, 0–100)" in md
    assert "0–1" in data["units"]["rouge"] and data["comparison"]["metrics"]["rougeL"]["baseline_mean"] == pytest.approx(0.2)
    assert data["job"]["estimate_usd"] == 0.55 and data["job"]["billed_usd"] == 0.0


def test_the_local_cost_row_says_it_is_free_and_agrees_with_the_total(run):
    md = run["md"]
    assert "| cost | estimate $0.55 if billed by Vertex; local runs are free |" in md
    assert ("**Total: $0.00** (local runs are free; the tuning would cost an estimated $0.55 if billed by Vertex)."
            in md)


def test_on_vertex_the_cost_row_shows_the_billed_figure(run):
    r, prepared, _, b_ev, t_ev, compared = run["args"]
    billed = TunedModel(job="j", key="k", tuned_model="m", endpoint="e", stats={"billable_tokens": 200_000},
                        cost_estimate={**LOCAL_ESTIMATE, "backend": "vertex", "method": "countTokens (Vertex AI)"})
    data = build_report(settings={**SETTINGS, "backend": "vertex"}, prepared=prepared, tuning=billed,
                        comparison=compared, evaluations={"base": b_ev, "tuned": t_ev})
    md = render_markdown(data, r)
    assert "| cost | $1.00 (billable tokens reported by the job) |" in md and "local runs are free" not in md
    pending = billed.model_copy(update={"stats": {}})
    data = build_report(settings={**SETTINGS, "backend": "vertex"}, prepared=prepared, tuning=pending,
                        comparison=compared, evaluations={"base": b_ev, "tuned": t_ev})
    assert "| cost | $0.55 (the pre-submission estimate: countTokens (Vertex AI) × epochs × price) |" in \
        render_markdown(data, r)


def test_the_prefect_artifact_names_each_plot_instead_of_a_broken_image(run):
    root = str(run["root"])
    ui = for_prefect_ui(run["md"], root)
    assert not _images(ui) and not [t for t in _links(ui) if not t.startswith("https://")]
    for target in _images(run["md"]):
        assert f": `{root}/{target}`" in ui
    assert f"`{root}/compare/report.md`" in ui
    gcs = for_prefect_ui("![loss](tuning/loss.png)", "gs://b/runs/x")
    assert gcs == "*loss*: [gs://b/runs/x/tuning/loss.png](https://storage.cloud.google.com/b/runs/x/tuning/loss.png)"


def test_without_the_test_set_or_a_loss_the_report_still_explains(run, tmp_path):
    _, prepared, tuned_model, b_ev, t_ev, compared = run["args"]
    other = str(tmp_path / "runs" / "b")  # no loss plot here; prepared.test does not exist
    report = write_run_report(other, SETTINGS, prepared, tuned_model, b_ev, t_ev, compared)
    md = storage.read_text(report.report_uri)
    assert "tuning/loss.png" not in md and "Article: not shown" in md and "### Hurt most: example `e07`" in md
    for target in _images(md):  # plots of another folder: linked by their path, never a broken relative link
        assert Path(target).is_absolute() or (Path(other) / target).is_file()


def test_choose_when_nothing_hurt_and_excerpts():
    base = [ExampleResult(id=str(i), model="b", prompt_chars=1, reference="r", output="o",
                          scores={m: 0.1 for m in METRICS}) for i in range(2)]
    tuned = [ExampleResult(id=str(i), model="t", prompt_chars=1, reference="r", output="",
                           scores={m: 0.2 + i / 10 for m in METRICS}) for i in range(2)]
    pairs = examples.choose(base, tuned, None)
    assert [p["id"] for p in pairs["helped"]] == ["1", "0"] and pairs["hurt"] == []
    md = "\n".join(examples.markdown(pairs))
    assert "Helped most (2 of 2)" in md and "No example scored lower on ROUGE-L with tuning" in md
    assert "- **Tuned answer** (ROUGE-L 30.0): *(empty)*" in md
    assert examples.excerpt("Short.\n\nTwo.") == "Short.\n\nTwo."
    cut = examples.excerpt("word " * 200, limit=100)
    assert cut.endswith("…") and len(cut) <= 101 and "  " not in cut
    assert examples.inline("<b>x</b> " + "y " * 400, limit=50).startswith("&lt;b>x&lt;/b> y")
    assert relative("gs://b/r/compare/m.png", "gs://b/r") == "compare/m.png"
    assert relative("gs://other/m.png", "gs://b/r") == "gs://other/m.png"
    assert relative("/elsewhere/m.png", "/runs/x") == "/elsewhere/m.png"
