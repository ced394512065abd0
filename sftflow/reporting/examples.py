"""The example pairs that show *why* the verdict came out as it did: the test examples where tuning helped most and
the one where it hurt most by ROUGE-L (tuned − base), each with an excerpt of its article, the reference, both
answers and their scores. Chosen from the per-example results (sftflow.evaluation.results, the one reader), the same
ranking as compare/report.md's tables (`best_and_worst`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sftflow.evaluation.compare_report import best_and_worst
from sftflow.evaluation.results import ExampleResult
from sftflow.reporting.cells import points, pts

HELPED = 3  # examples shown where tuning helped most
HURT = 1  # ... and where it hurt most
EXCERPT_CHARS = 400  # of the article: enough to see what it is about and what a summary could pick
ANSWER_CHARS = 600  # of a reference or an answer (summaries are a few sentences; a runaway answer is cut)
_MIN_PIECE = 60  # a paragraph is not started for fewer characters than this
_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*(?=\s|$)")
_BLOCK_START = re.compile(r"^([#>+*-]|\d+[.)]|=+$)")  # what would make a quoted line a heading, list or quote


def choose(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult], articles: Mapping[str, str] | None,
           helped: int = HELPED, hurt: int = HURT) -> dict[str, list[dict[str, Any]]]:
    """{"helped": the `helped` largest ROUGE-L gains, "hurt": the `hurt` largest losses}, JSON-ready (scores are
    F-measures, 0–1, as in results.jsonl); `articles`: article text by example id (None: not known)."""
    best, worst = best_and_worst(baseline, tuned, k=max(helped, hurt))

    def pair(b: ExampleResult, t: ExampleResult, d: float) -> dict[str, Any]:
        article = (articles or {}).get(b.id)
        return {"id": b.id, "base_rouge_l": b.scores["rougeL"], "tuned_rouge_l": t.scores["rougeL"],
                "difference": d, "article_excerpt": None if article is None else excerpt(article),
                "article_chars": None if article is None else len(article.strip()),
                "reference": b.reference, "base_answer": b.output, "tuned_answer": t.output}

    return {"helped": [pair(*p) for p in best[:helped]], "hurt": [pair(*p) for p in worst[:hurt]]}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The article's start, at most `limit` characters of text, its paragraphs kept (blank line between), cut at a
    sentence end where one is near enough, else at a word, with "…" where text was left out."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    out: list[str] = []
    room = limit
    for i, p in enumerate(paras):
        if len(p) <= room:
            out.append(p)
            room -= len(p)
            continue
        if room >= _MIN_PIECE or not out:
            out.append(_cut(p, room))
        elif not re.search(r"[.!?…]$", out[-1]):
            out[-1] += "…"
        else:
            out[-1] += " …"
        break
    return "\n\n".join(out)


def _cut(p: str, room: int) -> str:
    """`p` cut to at most `room` characters (plus the mark): at the last sentence end in its second half, else at the
    last space."""
    ends = [m.end() for m in _SENTENCE_END.finditer(p[: room + 1]) if m.end() >= room // 2]
    if ends:
        return p[: ends[-1]] + " …"
    space = p.rfind(" ", 0, room)
    head = p[: space if space > room // 2 else room].rstrip(" ,;:–-")
    return head + "…"


def inline(text: str | None, limit: int = ANSWER_CHARS) -> str:
    """One line of markdown text: whitespace collapsed, cut at a word with "…", `<` escaped; *(empty)* if none."""
    s = " ".join((text or "").split())
    if len(s) > limit:
        space = s.rfind(" ", 0, limit)
        s = s[: space if space > limit // 2 else limit].rstrip(" ,;:") + "…"
    return s.replace("&", "&amp;").replace("<", "&lt;") or "*(empty)*"


def _quote(text: str) -> list[str]:
    """A blockquote of `text`'s paragraphs, none of them read as a heading, list or nested quote."""
    lines: list[str] = []
    for para in text.split("\n\n"):
        para = para.replace("&", "&amp;").replace("<", "&lt;")
        lines += [">"] if lines else []
        lines.append("> " + ("\\" + para if _BLOCK_START.match(para) else para))
    return lines


def _pair_markdown(title: str, p: dict[str, Any], level: int) -> list[str]:
    b, t = p["base_rouge_l"], p["tuned_rouge_l"]
    lines = [f"{'#' * level} {title}: example `{p['id']}`, ROUGE-L {points(b, 1)} → {points(t, 1)} "
             f"({pts(p['difference'])} points)", ""]
    if p.get("article_excerpt"):
        lines += [f"Article (excerpt; {p['article_chars']:,} characters in all):", "", *_quote(p["article_excerpt"]), ""]
    else:
        lines += ["Article: not shown (the test set was not at hand when the report was written).", ""]
    lines += [f"- **Reference:** {inline(p['reference'])}",
              f"- **Base answer** (ROUGE-L {points(b, 1)}): {inline(p['base_answer'])}",
              f"- **Tuned answer** (ROUGE-L {points(t, 1)}): {inline(p['tuned_answer'])}", ""]
    return lines


def markdown(pairs: Mapping[str, Sequence[dict[str, Any]]], level: int = 3) -> list[str]:
    """The chosen pairs (`choose`'s output), one subsection each: helped most first, then hurt most."""
    lines: list[str] = []
    helped, hurt = pairs.get("helped") or [], pairs.get("hurt") or []
    for i, p in enumerate(helped, start=1):
        lines += _pair_markdown(f"Helped most ({i} of {len(helped)})" if len(helped) > 1 else "Helped most", p, level)
    if not helped:
        lines += ["No example scored higher on ROUGE-L with tuning.", ""]
    for p in hurt:
        lines += _pair_markdown("Hurt most", p, level)
    if not hurt:
        lines += ["No example scored lower on ROUGE-L with tuning: there is none where it hurt.", ""]
    return lines
