"""The docs: a short README that leads to every page, a nav that lists every page, and figures that
can be traced to the raw output they come from.

The convention for docs/performance.md (the page states it too): every figure is in a table, and
every table row names its source in its last cell, a link into ``results/`` (``docs/results`` is
``benchmarks/results``); a JSON source also names, as code, the parts of the file the row quotes
(``systems.uwsgi-mules.closed_loop.64``: keys from the top); a text source may name, as code, phrases
that the lines it quotes hold (``default / mule-floor, throughput at 64``). Every figure of the row must be in
those parts (their values, or digits in their keys), as the file has it or rounded to the digits
shown (``4,363`` for 4362.51, ``0.78`` for 0.781, ``100%`` for 1.0, ``4.5e-13`` for 4.547e-13); a
ratio (``1.75x``) must be the quotient of two other figures of its row, to its last digit; a date, a
time or a commit must occur in the file as written. Code spans (commands, scopes) and the digits of
names (``ray-plain-1``) are not figures. Outside the tables the page carries no measured figure (a
number with a unit).
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
PERFORMANCE = DOCS / "performance.md"
README = ROOT / "README.md"
README_MAX_LINES = 150

CODE_SPAN = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\(([^)\s]*)\)")
SOURCE = re.compile(r"\]\((results/[^)#\s]+)\)")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")
TIME = re.compile(r"\b\d{2}:\d{2}\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")  # a commit, or 7+ digits: as written
FIGURE = re.compile(
    r"(?<![\w.])(?<![A-Za-z]-)(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?P<fraction>\.\d+)?(?:e(?P<exponent>-?\d+))?(?P<suffix>x|%)?(?!\w|\.\d)"
)
FILE_NUMBER = re.compile(r"(?:(?<![\w%.])-)?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")  # "47.3%-125.7%": no minus
PROSE_FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:ms|µs|us|s|req/s|KB|MB|GB|%|x)(?!\w)")
CELL_BORDER = re.compile(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)")  # a "|" outside code spans
SEPARATOR_ROW = re.compile(r"^\|(?:\s*:?-+:?\s*\|)+\s*$")
PROSE_COUNT = re.compile(r"\b\d[\d,]* (?:tests|mutants|snippets)\b")


@dataclass(frozen=True)
class Figure:
    text: str
    value: float
    tolerance: float  # half a unit of the last digit shown (one unit for a ratio)
    kind: str  # "number", "percent" or "ratio"


def parse_figure(match: re.Match[str]) -> Figure:
    whole = match["whole"].replace(",", "")
    fraction = match["fraction"] or ""
    exponent = int(match["exponent"] or 0)
    digits = len(fraction) - 1 if fraction else 0
    value = float(whole + fraction) * 10.0**exponent
    unit = 10.0 ** (exponent - digits)
    if match["suffix"] == "x":
        return Figure(match[0], value, unit * (1 + 1e-9), "ratio")
    if match["suffix"] == "%":
        return Figure(match[0], value / 100, unit / 200 * (1 + 1e-9), "percent")
    return Figure(match[0], value, unit / 2 * (1 + 1e-9) + 1e-15, "number")


def as_written(percent: Figure) -> Figure:
    """A percentage as the number written before its ``%`` (``94.7%``: 94.7), for text files that print it so."""
    return Figure(percent.text, percent.value * 100, percent.tolerance * 100, "number")


@cache
def file_text(path: Path) -> str:
    return path.read_text()


@cache
def file_json(path: Path) -> object:
    return json.loads(file_text(path))


def text_numbers(text: str) -> list[float]:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 in a markdown table
    return [float(number) for number in FILE_NUMBER.findall(text)]


def json_numbers(node: object) -> list[float]:
    """Every number in a parsed JSON value: its numbers, and the digits in its keys ("64", "loads_per_1000")."""
    if isinstance(node, bool) or node is None:
        return []
    if isinstance(node, int | float):
        return [float(node)]
    if isinstance(node, str):
        return []
    if isinstance(node, list):
        return [number for item in node for number in json_numbers(item)]
    if isinstance(node, dict):
        numbers = []
        for key, value in node.items():
            numbers += [float(n) for n in re.findall(r"\d+(?:\.\d+)?", key)] + json_numbers(value)
        return numbers
    raise AssertionError(f"not JSON: {node!r}")


def quotable(path: Path, scopes: tuple[str, ...]) -> tuple[list[float], str]:
    """The numbers and the text a row may quote: the named parts of a JSON file, or the whole of any
    other file."""
    if path.suffix != ".json":
        text = file_text(path)
        if scopes:  # the lines that hold one of the phrases
            text = "\n".join(line for line in text.splitlines() if any(scope in line for scope in scopes))
            if not text:
                raise KeyError(f"no line of {path.name} holds {' or '.join(map(repr, scopes))}")
        return sorted(text_numbers(text)), text
    numbers = []
    texts = []
    for scope in scopes:
        node = file_json(path)
        for key in scope.split("."):
            if not isinstance(node, dict) or key not in node:
                raise KeyError(f"{scope} is not in {path.name}")
            node = node[key]
            numbers += [float(n) for n in re.findall(r"\d+(?:\.\d+)?", key)]
        numbers += json_numbers(node)
        texts.append(json.dumps(node))
    return sorted(numbers), "\n".join(texts)


def in_numbers(figure: Figure, numbers: list[float]) -> bool:
    i = bisect.bisect_left(numbers, figure.value - figure.tolerance)
    return i < len(numbers) and numbers[i] <= figure.value + figure.tolerance


def is_quotient(ratio: Figure, others: list[Figure]) -> bool:
    return any(
        b.value and abs(a.value / b.value - ratio.value) <= ratio.tolerance
        for a in others
        for b in others
        if a is not b
    )


def strip(line: str) -> str:
    """The line without code spans and link targets: what a reader sees as text."""
    return LINK_TARGET.sub("]", CODE_SPAN.sub("", line))


@dataclass(frozen=True)
class Row:
    number: int  # line number in the page
    line: str


def page_parts(path: Path) -> tuple[list[Row], list[Row]]:
    """The page's table body rows and its prose lines (code blocks and table headers left out)."""
    lines = path.read_text().splitlines()
    rows: list[Row] = []
    prose: list[Row] = []
    in_code = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("|"):
            is_header = i + 1 < len(lines) and SEPARATOR_ROW.match(lines[i + 1]) is not None
            if not is_header and not SEPARATOR_ROW.match(line):
                rows.append(Row(i + 1, line))
        else:
            prose.append(Row(i + 1, line))
    return rows, prose


def untraced_figures(row: Row) -> list[str]:
    """What in one table row of the performance page its source does not hold (empty: all traced)."""
    cells = CELL_BORDER.split(row.line.strip().strip("|"))
    sources = SOURCE.findall(cells[-1])
    if len(sources) != 1:
        return [f"line {row.number}: the last cell must link one results file: {row.line}"]
    source = sources[0]
    path = (DOCS / source).resolve()
    if not path.is_relative_to(RESULTS.resolve()) or not path.is_file():
        return [f"line {row.number}: {source} is not a file under benchmarks/results/"]
    spans = [span.strip("`") for span in CODE_SPAN.findall(cells[-1])]
    # a JSON file's parts are key paths (several to a span); a text file's, phrases its lines hold
    scopes = tuple(scope for span in spans for scope in span.split()) if path.suffix == ".json" else tuple(spans)
    if path.suffix == ".json" and not scopes:
        return [f"line {row.number}: name the parts of {path.name} the row quotes (`systems.NAME...`)"]
    try:
        numbers, quoted_text = quotable(path, scopes)
    except KeyError as error:
        return [f"line {row.number}: {error.args[0]}"]
    where = f"{source} {' '.join(scopes)}".strip()
    problems = []
    text = strip(row.line)
    for pattern in (DATE, COMMIT, TIME):
        for token in pattern.findall(text):
            if token not in (quoted_text if path.suffix == ".json" else file_text(path)):  # a run's date: its header
                problems.append(f"line {row.number}: {token!r} does not occur in {where}")
        text = pattern.sub(" ", text)
    figures = [parse_figure(match) for match in FIGURE.finditer(text)]
    plain = [figure for figure in figures if figure.kind != "ratio"]
    for figure in figures:
        found = is_quotient(figure, plain) if figure.kind == "ratio" else in_numbers(figure, numbers)
        if not found and figure.kind == "percent" and path.suffix != ".json":  # a text file writes "94.7%"
            found = in_numbers(as_written(figure), numbers)
        if not found:
            place = "the quotient of two figures of its row" if figure.kind == "ratio" else f"in {where}"
            problems.append(f"line {row.number}: {figure.text!r} is not {place}")
    return problems


def test_every_figure_on_the_performance_page_is_in_the_results_file_its_row_names() -> None:
    rows, _ = page_parts(PERFORMANCE)
    assert rows, "no tables on the performance page"
    problems = [problem for row in rows for problem in untraced_figures(row)]
    assert not problems, "\n".join(problems)


def test_the_performance_page_has_no_figure_outside_its_tables() -> None:
    _, prose = page_parts(PERFORMANCE)
    found = [f"line {row.number}: {m}" for row in prose for m in PROSE_FIGURE.findall(strip(row.line))]
    assert not found, "figures in prose (put them in a table row with their source):\n" + "\n".join(found)


def test_the_convention_catches_a_figure_its_file_does_not_hold() -> None:
    source = "[latest.json](results/latest.json) `systems.uwsgi-mules.closed_loop.64 systems.ray-plain.closed_loop.64`"
    assert untraced_figures(Row(1, f"| single row, 64 connections | 4,363 req/s | 3,439 | 1.27x | {source} |")) == []
    assert untraced_figures(Row(1, f"| single row, 64 connections | 4,463 req/s | {source} |"))
    assert untraced_figures(Row(1, f"| single row, 1 connection | 1,122 req/s | {source} |")), "outside the scope"
    assert untraced_figures(Row(1, f"| ratio | 4,363 | 3,439 | 1.37x | {source} |"))
    assert untraced_figures(Row(1, f"| run | 2026-12-07T00:00:00 | {source} |"))
    run = "| many models | 2026-12-06T08:37:04 | {} | [latest.json](results/latest.json) `many_models.machine` |"
    assert untraced_figures(Row(1, run.format("1d6d893"))) == []
    assert untraced_figures(Row(1, run.format("4964203"))), "the suite's commit, not this run's"
    assert untraced_figures(Row(1, "| no scope | 4,363 | [latest.json](results/latest.json) |"))
    assert untraced_figures(Row(1, "| no such part | 4,363 | [latest.json](results/latest.json) `systems.nginx` |"))
    assert untraced_figures(Row(1, "| a figure with no source | 4,363 |"))
    floor = "[mule-floor-20261207.txt](results/mule-floor-20261207.txt) `default / mule-floor, throughput at 64`"
    assert untraced_figures(Row(1, f"| throughput, 64 connections | 94.7% | 47.3%-125.7% | {floor} |")) == []
    assert untraced_figures(Row(1, f"| throughput, 64 connections | 83.9% | {floor} |")), "another line's figure"
    assert untraced_figures(Row(1, f"| throughput | 94.7% | {floor.replace('64', '65')} |")), "no such line"
    assert untraced_figures(Row(1, "| elsewhere | 1 | [x](results/../../README.md) |"))


def nav_pages() -> list[str]:
    def walk(entry: object) -> list[str]:
        if isinstance(entry, str):
            return [entry]
        if isinstance(entry, list):
            return [page for item in entry for page in walk(item)]
        if isinstance(entry, dict):
            return [page for value in entry.values() for page in walk(value)]
        raise AssertionError(f"unexpected nav entry {entry!r}")

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return walk(config["nav"])


def test_every_nav_page_exists_and_every_docs_page_is_in_the_nav() -> None:
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page twice in the nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"in mkdocs.yml's nav but not in docs/: {missing}"
    unlisted = sorted({path.name for path in DOCS.glob("*.md")} - set(pages))
    assert not unlisted, f"in docs/ but not in mkdocs.yml's nav: {unlisted}"


def relative_links(path: Path) -> list[str]:
    links = LINK_TARGET.findall(CODE_SPAN.sub("", path.read_text()))
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:|#", link)]


def test_the_readme_is_a_front_door_of_at_most_150_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the rest into docs/"


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    links = relative_links(README)
    broken = [link for link in links if not (ROOT / link).exists()]
    assert not broken, f"README links that lead nowhere: {broken}"
    assert "docs/index.md" in links, "the README must link the docs index"
    reachable = {Path(link).name for link in links if link.startswith("docs/")}
    reachable |= {link for link in relative_links(DOCS / "index.md") if "/" not in link}
    unreachable = sorted(set(nav_pages()) - reachable)
    assert not unreachable, f"not linked from the README nor from docs/index.md: {unreachable}"


def test_no_counts_in_prose() -> None:
    """A count belongs to the tool that prints it (pytest, python -m tests.mutants), not to the docs."""
    pages = [README, *sorted(DOCS.glob("*.md"))]
    found = [f"{page.name}: {m}" for page in pages for m in PROSE_COUNT.findall(CODE_SPAN.sub("", page.read_text()))]
    assert not found, "\n".join(found)
