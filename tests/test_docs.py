"""The docs stay true to the code: every `famr-run` command in README.md and docs/*.md composes, and every
link between the repository's pages resolves.

A command is a line starting with `famr-run ` inside a ``` code block or an inline `code` span. Each one is
composed in-process with Hydra's compose API, as tests/conftest.py's ``compose_config`` does, and its keys
are checked by ``check_known_keys``: composing never reads data and never trains, so the whole file takes
seconds.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from famr_cli.cli import CONFIG_DIR
from famr_cli.config_schema import check_known_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The docs hold far more commands than this; the floor keeps the test from passing on an extractor that finds none.
MIN_COMMANDS = 20
MIN_LINKS = 20

# Hydra's command-line flags: they choose what famr-run prints or how it runs, never the config it composes.
FLAGS = {"-m", "--multirun", "-h", "--help", "--hydra-help", "--resolve", "--version"}
FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package"}
# famr-privacy passes every key=value to its famr-run jobs: its lines compose like famr-run's, its own flags dropped.
FLAGS |= {"--tables-only", "--dry-run"}
FLAGS_WITH_VALUE |= {"--methods", "--models", "--protocols", "--train-seed", "--dir"}
INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}  # --info's optional argument

PLACEHOLDER = "DOCS-PLACEHOLDER"
ELLIPSES = ("...", "…")
# Keys whose value is a path: the docs may leave it as `...` or `<the CIFAR-10 copy>`. Composing never opens it,
# so any string will do; an elided value of any other key means the command is a pattern, not a command.
PATH_KEYS = {
    "dataset.root",
    "dataset.download_dir",
    "forget.indices_file",
    "original_weights",
    "cache_dir",
    "logger.dir",
    "hydra.run.dir",
    "hydra.sweep.dir",
    "hydra.sweeper.storage",
}
DUMMY_PATH = "docs-placeholder/data"


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    text: str


def _fenced_and_prose(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Split a page into the lines inside ``` / ~~~ blocks and the other lines, each with its 1-based line number."""
    code, prose, fence = [], [], None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            prose.append((number, ""))
        elif fence is not None and stripped.startswith(fence):
            fence = None
            prose.append((number, ""))
        elif fence is not None:
            code.append((number, line))
        else:
            prose.append((number, line))
    return code, prose


def _paragraphs(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Prose lines joined into paragraphs (an inline code span may wrap onto the next line), with the first line's number."""
    paragraphs, current, start = [], [], 0
    for number, line in [*lines, (0, "")]:
        if line.strip():
            start = start or number
            current.append(line.strip())
        elif current:
            paragraphs.append((start, " ".join(current)))
            current, start = [], 0
    return paragraphs


INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
COMMENT = re.compile(r"\s+#.*$")
IS_COMMAND = re.compile(r"^famr-(run|privacy)(\s|$)")


def _commands(page: Path) -> list[Command]:
    code, prose = _fenced_and_prose(page.read_text(encoding="utf-8"))
    name = page.relative_to(ROOT).as_posix()
    found: list[Command] = []
    pending, pending_start = "", 0
    for number, line in code:  # a trailing backslash continues a shell line
        pending_start = pending_start or number
        pending += line.strip().removeprefix("$ ")
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        command = COMMENT.sub("", pending).strip()
        if IS_COMMAND.match(command):
            found.append(Command(f"{name}:{pending_start}", command))
        pending, pending_start = "", 0
    for number, paragraph in _paragraphs(prose):
        for span in INLINE_CODE.findall(paragraph):
            command = COMMENT.sub("", span).strip()
            if command.startswith(("famr-run ", "famr-privacy ")):
                found.append(Command(f"{name}:{number}", command))
    return found


def _is_placeholder(value: str) -> bool:
    return PLACEHOLDER in value or any(e in value for e in ELLIPSES)


def _top_level_split(value: str) -> list[str]:
    """Split a sweep value at commas outside brackets, parentheses and quotes."""
    parts, depth, quote, current = [], 0, "", ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


class NotComposable(Exception):
    """The command is a pattern with elided values (`method.lr=…`), not something to run."""


def _overrides(command: str) -> list[str]:
    """famr-run's argument list reduced to the Hydra overrides it composes: flags dropped, placeholders filled."""
    words = shlex.split(re.sub(r"<[^<>]*>", PLACEHOLDER, command))[1:]
    overrides: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-"):
            flag, has_value, _ = word.partition("=")
            if flag in FLAGS or (flag in FLAGS_WITH_VALUE and has_value):
                continue
            if flag in FLAGS_WITH_VALUE:
                i += 1
            elif flag in ("-i", "--info"):
                if i < len(words) and words[i] in INFO_VALUES:
                    i += 1
            else:
                raise AssertionError(f"a flag this test does not know: {word!r} (teach FLAGS about it)")
            continue
        if word in ELLIPSES or word == PLACEHOLDER:
            raise NotComposable(f"elided overrides ({word!r})")
        key, sep, value = word.partition("=")
        if sep and _is_placeholder(value):
            kept = [v for v in _top_level_split(value) if not _is_placeholder(v)]
            if len(_top_level_split(value)) > 1 and kept:  # a sweep list with an elided middle: `[0],[1],…,[9]`
                value = ",".join(kept)
            elif key.lstrip("+~") in PATH_KEYS:
                value = DUMMY_PATH
            else:
                raise NotComposable(f"{key} has an elided value")
            word = f"{key}={value}"
        overrides.append(word)
    return overrides


def _compositions(overrides: list[str]) -> list[list[str]]:
    """One override list per config to compose. A multirun sweep (`method.lam=0.01,0.1,1`) cannot be composed as
    such: every swept value is composed once, with the other swept keys at their first value, so a misspelt value
    anywhere in a list fails without composing the whole product."""
    parser = OverridesParser.create()
    parsed = [parser.parse_override(o) for o in overrides]
    values = [list(p.sweep_string_iterator()) if p.is_sweep_override() else [o] for o, p in zip(overrides, parsed)]
    keys = [p.get_key_element() for p in parsed]

    def pick(choice: dict[int, int]) -> list[str]:
        out = []
        for n, (p, vals) in enumerate(zip(parsed, values)):
            value = vals[choice.get(n, 0)]
            out.append(f"{keys[n]}={value}" if p.is_sweep_override() else value)
        return out

    combos = [pick({})]
    combos += [pick({n: k}) for n, vals in enumerate(values) for k in range(1, len(vals))]
    return combos


COMMANDS = [c for page in PAGES for c in _commands(page)]


def _compose(overrides: list[str]):
    # return_hydra_config=True composes the `hydra` node too, so hydra/launcher=..., hydra/sweeper=... and every
    # hydra.launcher.* / hydra.sweeper.* / hydra.sweep.dir override in the docs is checked against the plugins'
    # configs instead of being dropped unseen; famr's own keys are still checked by check_known_keys.
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
@pytest.mark.slow
def test_documented_command_composes(command: Command):
    try:
        overrides = _overrides(command.text)
    except NotComposable as why:
        pytest.skip(f"a pattern, not a command: {why}")
    for combo in _compositions(overrides):
        cfg = _compose(combo)
        check_known_keys(cfg)


def test_enough_documented_commands_compose(record_property):
    composable = []
    for command in COMMANDS:
        try:
            composable.append((command, _compositions(_overrides(command.text))))
        except NotComposable:
            continue
    configs = sum(len(c) for _, c in composable)
    record_property("commands_composed", len(composable))
    record_property("configs_composed", configs)
    print(f"\n{len(composable)} documented famr-run commands compose ({configs} configs; {len(COMMANDS)} found)")
    assert len(composable) >= MIN_COMMANDS, f"only {len(composable)} famr-run commands found in the docs: is the extractor broken?"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _links(page: Path) -> list[tuple[int, str]]:
    """Markdown links and images of a page outside code, as (line, target)."""
    _, prose = _fenced_and_prose(page.read_text(encoding="utf-8"))
    found = []
    for number, paragraph in _paragraphs(prose):
        text = INLINE_CODE.sub("", paragraph)
        found += [(number, target) for target in LINK.findall(text) + IMAGE.findall(text)]
    return found


@functools.cache
def _anchors(page: Path) -> frozenset[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, each space a hyphen, and
    -1, -2, ... after a repeated one (read once per page, however many links point at it)."""
    _, prose = _fenced_and_prose(page.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in anchors:
            n += 1
            unique = f"{slug}-{n}"
        anchors.add(unique)
    return frozenset(anchors)


def test_slugs_follow_githubs_rule(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# The `cifar10_cpu` 10 % search: all 8 methods\n\n## FAMR's λ sweep\n\n## Setup\n\n## Setup\n")
    assert _anchors(page) == {"the-cifar10_cpu-10--search-all-8-methods", "famrs-λ-sweep", "setup", "setup-1"}


def test_every_intra_repo_link_resolves(record_property):
    broken, checked = [], 0
    for page in PAGES:
        for number, target in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not the repository's
                continue
            path, _, anchor = target.partition("#")
            destination = page.parent / path if path else page
            checked += 1
            if not destination.exists():
                broken.append(f"{page.relative_to(ROOT).as_posix()}:{number}: {target}")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{page.relative_to(ROOT).as_posix()}:{number}: {target} (no such heading)")
    record_property("links_checked", checked)
    print(f"\n{checked} intra-repo links checked")
    assert not broken, "links to files or headings that do not exist:\n" + "\n".join(broken)
    assert checked >= MIN_LINKS, f"only {checked} links found: is the extractor broken?"


OUTSIDE = re.compile(r"DESIGN\.md|(?<![\w.])/(?:work|root|home)/")


def test_docs_name_nothing_outside_the_repository():
    """Pages point at the repository's own files: no design notes kept elsewhere, no paths of one machine."""
    found = [
        f"{page.relative_to(ROOT).as_posix()}:{n}: {line.strip()}"
        for page in PAGES
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_readme_links_every_docs_page():
    """README.md is the front page: a page under docs/ that it does not link is a page nobody finds."""
    linked = {(ROOT / target.split("#", 1)[0]).resolve() for _, target in _links(ROOT / "README.md")}
    missing = [p.relative_to(ROOT).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md links none of: {', '.join(missing)}"


ENV_DEFAULT = re.compile(r"\$\{oc\.env:(\w+),[^}]*\}")


def _option_tables() -> list[tuple[str, int, str, str]]:
    """(option file, line, key, documented default) of every ``| key | default | meaning |`` table in
    docs/configuration.md, each under its ``**`group=option`**`` (or ``**Top level**``) heading."""
    lines = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines()
    rows, source = [], None
    for n, line in enumerate(lines):
        heading = re.match(r"\*\*(?:`(\w+)=(\w+)`|Top level)\*\*", line)
        if heading:
            source = f"{heading.group(1)}/{heading.group(2)}.yaml" if heading.group(1) else "config.yaml"
        if line.startswith("| key | default |"):
            assert source is not None, f"docs/configuration.md:{n + 1}: an option table with no **`group=option`** heading above it"
            for offset, row in enumerate(lines[n + 2 :], start=n + 3):
                if not row.startswith("|"):
                    break
                key, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
                rows.append((source, offset, key.strip("`"), default))
    return rows


def _as_float(text: str) -> float | None:
    try:
        return float(text)  # "1e-3": YAML 1.1 reads it as a string, the docs' reader as a number
    except ValueError:
        return None


def test_the_option_reference_matches_the_config_files():
    """Every key docs/configuration.md documents exists in its option's YAML, with the default the YAML holds."""
    import yaml

    rows = _option_tables()
    assert len(rows) >= 40, f"only {len(rows)} documented options found: has the page's table layout changed?"
    wrong = []
    for source, line, key, default in rows:
        shipped = yaml.safe_load((Path(CONFIG_DIR) / source).read_text())
        where = f"docs/configuration.md:{line} ({source}: {key})"
        if key not in shipped:
            wrong.append(f"{where}: no such key")
            continue
        value, documented = shipped[key], re.match(r"`([^`]*)`", default)
        env = ENV_DEFAULT.fullmatch(str(value))
        if env:  # shown as "`$VAR` or ..."
            ok = documented is not None and documented.group(1) == f"${env.group(1)}"
        else:
            text = documented.group(1) if documented else None
            ok = text is not None and (yaml.safe_load(text) == value or (isinstance(value, float) and _as_float(text) == value))
        if not ok:
            wrong.append(f"{where}: documented {default!r}, shipped {value!r}")
    assert not wrong, "the option reference drifted from the config files:\n" + "\n".join(wrong)
