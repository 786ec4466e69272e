"""Build wordnet.txt.gz, the default text corpus, from Debian's wordnet-base package.

Run from the repository root (needs apt-get and dpkg-deb; not run by the product):

    python operator/lms_operator/compression/corpus/build.py

It downloads wordnet-base 1:3.0-37 (WordNet 3.0), takes every gloss's definition and its quoted
example sentences from data.{noun,verb,adj,adv}, keeps those of 5 to 40 words, drops
duplicates, shuffles them with a fixed seed and keeps the first LIMIT lines. Same package,
same file: the output is byte-identical on every run (gzip mtime 0).
"""
from __future__ import annotations

import gzip
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "wordnet-base"
LIMIT = 16000
SEED = 20261201
OUT = Path(__file__).with_name("wordnet.txt.gz")
_QUOTED = re.compile(r'"([^"]+)"')


def gloss_sentences(line: str) -> list[str]:
    """Definition and quoted examples of one data.* line (its text after ' | ')."""
    if line.startswith("  ") or " | " not in line:
        return []
    gloss = line.split(" | ", 1)[1].strip()
    examples = [e.strip() for e in _QUOTED.findall(gloss)]
    definition = _QUOTED.sub("", gloss).strip(" ;")
    out = []
    if definition:
        out.append(definition[0].upper() + definition[1:] + ("" if definition.endswith((".", "!", "?")) else "."))
    out += [e for e in examples if e]
    return [s for s in out if 5 <= len(s.split()) <= 40]


def build(wordnet_dir: Path) -> list[str]:
    seen: set[str] = set()
    sentences: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (wordnet_dir / f"data.{part}").read_text(encoding="utf-8", errors="strict").splitlines():
            for s in gloss_sentences(line):
                if s not in seen:
                    seen.add(s)
                    sentences.append(s)
    random.Random(SEED).shuffle(sentences)
    return sentences[:LIMIT]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
        deb = next(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        lines = build(Path(tmp) / "x" / "usr" / "share" / "wordnet")
        print(f"{deb.name}: {len(lines)} sentences", file=sys.stderr)
    with open(OUT, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
