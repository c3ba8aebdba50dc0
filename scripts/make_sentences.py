"""Write a varied, deterministic sentences file (one sentence a line) for text distillation; no downloads.

Two sources, mixed and shuffled with a fixed seed:

* templated sentences over many topics (subjects, verbs, objects, places, times, clauses), so the
  vocabulary reaches well beyond code;
* sentences split from docstrings of Python standard-library modules (as the text demo's corpus).

Usage::

    python scripts/make_sentences.py --out runs/sentences.txt --n 6000 --seed 0

The same ``--n``/``--seed`` on the same Python version writes the same file.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import re
import tempfile
import warnings
from pathlib import Path

TOPICS: dict[str, dict[str, list[str]]] = {
    "kitchen": {
        "subj": ["the chef", "my grandmother", "a hungry student", "the baker", "our neighbour", "the cook"],
        "verb": ["slices", "boils", "bakes", "tastes", "serves", "burns", "stirs", "seasons"],
        "obj": ["the onions", "a loaf of rye bread", "fresh pasta", "the tomato soup", "a lemon tart",
                "three eggs", "the spicy curry", "a bowl of rice"],
    },
    "sport": {
        "subj": ["the goalkeeper", "a young sprinter", "the home team", "the referee", "the coach", "our captain"],
        "verb": ["kicks", "wins", "loses", "throws", "catches", "trains for", "celebrates", "misses"],
        "obj": ["the final match", "a penalty", "the gold medal", "the ball", "the marathon",
                "a narrow victory", "the championship", "the last lap"],
    },
    "science": {
        "subj": ["the chemist", "a team of physicists", "the biologist", "the telescope", "the experiment",
                 "a graduate student"],
        "verb": ["measures", "observes", "discovers", "predicts", "analyses", "confirms", "rejects", "models"],
        "obj": ["the boiling point", "a distant galaxy", "a new protein", "the magnetic field",
                "cell division", "the reaction rate", "a rare mineral", "gravitational waves"],
    },
    "travel": {
        "subj": ["the tourists", "a pilot", "my cousin", "the train", "the ferry", "a lonely hiker"],
        "verb": ["visits", "crosses", "leaves", "reaches", "photographs", "explores", "avoids", "circles"],
        "obj": ["the old harbour", "the mountain pass", "a crowded market", "the northern border",
                "the desert", "a small island", "the cathedral", "the frozen lake"],
    },
    "business": {
        "subj": ["the manager", "a startup", "the bank", "our accountant", "the board", "an investor"],
        "verb": ["approves", "cancels", "negotiates", "reviews", "signs", "delays", "funds", "audits"],
        "obj": ["the quarterly budget", "a new contract", "the merger", "the annual report",
                "a loan", "the hiring plan", "the price increase", "the tax return"],
    },
    "computing": {
        "subj": ["the compiler", "a junior developer", "the database", "the server", "the test suite",
                 "a neural network"],
        "verb": ["rejects", "optimises", "caches", "crashes on", "parses", "indexes", "compresses", "learns"],
        "obj": ["the config file", "a malformed request", "the user table", "the nightly build",
                "a large image", "the sorting routine", "the log messages", "the training data"],
    },
    "nature": {
        "subj": ["the fox", "a flock of geese", "the old oak", "the river", "a swarm of bees", "the wolf"],
        "verb": ["hunts", "crosses", "shelters", "floods", "follows", "feeds on", "hides", "guards"],
        "obj": ["the meadow", "the valley", "a field of clover", "the riverbank", "the young deer",
                "the pine forest", "a hollow log", "the wetlands"],
    },
    "health": {
        "subj": ["the doctor", "a nurse", "the patient", "the pharmacist", "the surgeon", "the clinic"],
        "verb": ["treats", "examines", "prescribes", "monitors", "vaccinates", "reassures", "schedules", "tests"],
        "obj": ["the broken wrist", "a high fever", "the blood pressure", "the elderly man",
                "a new medicine", "the allergy", "the twins", "the recovery plan"],
    },
}
PLACES = ["in the morning", "after lunch", "during the storm", "at midnight", "on a quiet Sunday",
          "before the holidays", "in the city centre", "near the station", "at the weekend", "last winter"]
CLAUSES = ["because nobody else wanted to", "although it was raining", "while everyone was watching",
           "as the deadline approached", "without saying a word", "to everyone's surprise",
           "despite the noise", "for the first time", "as usual", "after a long discussion"]
FORMS = [
    "{S} {v} {o} {p}.",
    "{S} {v} {o} {c}.",
    "{p_cap}, {s} {v} {o}.",
    "Why {aux} {s} {v_base} {o}?",
    "I think {s} {v} {o} {p}.",
    "{S} never {v_base}s {o}.",
    "Yesterday {s} {v_past} {o} {c}.",
    "{S} {v} {o}, and {s2} {v2} {o2}.",
]
STDLIB = ("argparse", "collections", "csv", "datetime", "email", "functools", "heapq", "json", "logging",
          "os", "pathlib", "random", "re", "shutil", "statistics", "string", "subprocess", "textwrap",
          "threading", "unittest", "urllib.parse", "zipfile")


def _base(verb: str) -> str:
    head, *rest = verb.split(" ")
    if head.endswith("ies"):
        head = head[:-3] + "y"
    elif head.endswith(("shes", "ches", "sses", "xes")):
        head = head[:-2]
    elif head.endswith("s"):
        head = head[:-1]
    return " ".join([head, *rest])


def _past(verb: str) -> str:
    head, *rest = _base(verb).split(" ")
    irregular = {"win": "won", "lose": "lost", "throw": "threw", "catch": "caught", "leave": "left",
                 "hide": "hid", "feed": "fed", "mis": "missed", "bake": "baked", "sign": "signed"}
    past = irregular.get(head) or (head + "d" if head.endswith("e") else head + "ed")
    return " ".join([past, *rest])


def templated(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct template sentences (fewer when the templates run out)."""
    out: set[str] = set()
    topics = sorted(TOPICS)
    for _ in range(n * 20):
        if len(out) >= n:
            break
        t = TOPICS[rng.choice(topics)]
        t2 = TOPICS[rng.choice(topics)]
        s, v, o = rng.choice(t["subj"]), rng.choice(t["verb"]), rng.choice(t["obj"])
        p, c = rng.choice(PLACES), rng.choice(CLAUSES)
        text = rng.choice(FORMS).format(
            s=s, S=s[0].upper() + s[1:], v=v, o=o, p=p, c=c, p_cap=p[0].upper() + p[1:],
            aux="do" if not s.endswith("s") or s.startswith("the ") and " " not in s[4:] else "does",
            v_base=_base(v), v_past=_past(v), s2=rng.choice(t2["subj"]), v2=rng.choice(t2["verb"]),
            o2=rng.choice(t2["obj"]))
        out.add(text.replace("  ", " "))
    return sorted(out)


def stdlib_sentences(min_chars: int = 30, max_chars: int = 220) -> list[str]:
    """Sentences of standard-library docstrings (sorted, distinct)."""
    import importlib

    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in STDLIB:
            mod = importlib.import_module(name)
            objs = [mod, *[v for _, v in sorted(vars(mod).items()) if inspect.isclass(v) or inspect.isfunction(v)]]
            for obj in objs:
                text = " ".join((inspect.getdoc(obj) or "").split())
                for sent in re.split(r"(?<=[.!?])\s+", text):
                    if min_chars <= len(sent) <= max_chars and not sent.startswith(">>>") and "\x00" not in sent:
                        seen.add(sent)
    return sorted(seen)


def make_sentences(n: int = 6000, seed: int = 0, stdlib_share: float = 0.4) -> list[str]:
    """``n`` sentences: about ``stdlib_share`` from docstrings, the rest templated, shuffled by ``seed``."""
    rng = random.Random(seed)
    docs = stdlib_sentences()
    rng.shuffle(docs)
    docs = docs[: int(n * stdlib_share)]
    sentences = docs + templated(n - len(docs), rng)
    rng.shuffle(sentences)
    return sentences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sentences.txt", help="file to write (one sentence a line)")
    parser.add_argument("--n", type=int, default=6000, help="number of sentences")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sentences = make_sentences(args.n, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    os.chmod(tmp, 0o644)  # mkstemp creates it private
    os.replace(tmp, out)
    print(f"wrote {len(sentences)} sentences to {out}")


if __name__ == "__main__":
    main()
