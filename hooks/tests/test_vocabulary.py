"""The words the hooks share with the Swift side are the same on both sides.

depot_hook.SWIFT_VOCABULARY lists every shared constant the hooks use with where Swift defines it;
this test reads those Swift files (Sources/DepotAPI/Vocabulary.swift, the source of truth, and the
runner's Sources/DepotRunner/StageExecution.swift for the DEPOT_RESULT keys) and compares values.
A rename on either side fails here. It also checks that the stages spell none of these words
themselves (they must come from depot_hook)."""
from __future__ import annotations

import ast
import os
import re
import unittest
from typing import Optional, Union

import hookenv

import depot_hook

SWIFT_FILES = {
    "Vocabulary": os.path.join(hookenv.ROOT, "Sources", "DepotAPI", "Vocabulary.swift"),
    "StageExecution": os.path.join(hookenv.ROOT, "Sources", "DepotRunner", "StageExecution.swift"),
}


def read(stem: str) -> str:
    with open(SWIFT_FILES[stem]) as f:
        return f.read()


def strip_comments_and_strings(text: str) -> str:
    """The same text with comments blanked and string contents replaced by spaces (lengths kept),
    so braces can be matched on it and positions used in the original."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [c if c == "\n" else " " for c in text[i:j]]
            i = j
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out[i + 1:j] = " " * (j - i - 1)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def block(text: str, pattern: str) -> Optional[str]:
    """The body (between the braces) of the first declaration matching `pattern` (a regex that ends
    just before the opening brace's line part), at any depth; None when there is none."""
    code = strip_comments_and_strings(text)
    m = re.search(pattern + r"[^{]*\{", code)
    if not m:
        return None
    depth, i = 1, m.end()
    while depth and i < len(code):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        i += 1
    return text[m.end():i - 1]


def top_level(body: str) -> str:
    """`body` without the contents of nested blocks (so a nested enum's members are not its parent's)."""
    code = strip_comments_and_strings(body)
    out, depth = [], 0
    for c, orig in zip(code, body):
        if c == "}":
            depth -= 1
        if depth == 0:
            out.append(orig)
        if c == "{":
            depth += 1
    return "".join(out)


def enum_members(text: str, path: list[str]) -> dict[str, str]:
    """Raw values of the cases and string values of the static lets of the enum at `path`
    (e.g. ["Annotation", "Lineage"]). A case without a raw value has its name as raw value."""
    body: Optional[str] = text
    for name in path:
        assert body is not None
        body = block(body, rf"\benum\s+{name}\b")
        if body is None:
            raise AssertionError(f"no enum {'.'.join(path)} (missing {name})")
    own = top_level(body or "")
    members: dict[str, str] = {}
    for m in re.finditer(r"^\s*(?:(?:public|internal|fileprivate|private)\s+)?case\s+([^\n/]+)", own, re.M):
        for part in m.group(1).split(","):
            c = re.fullmatch(r'\s*(\w+)\s*(?:=\s*"([^"]*)")?\s*', part)
            if c:
                members[c.group(1)] = c.group(2) if c.group(2) is not None else c.group(1)
    for m in re.finditer(r'\bstatic\s+let\s+(\w+)\s*(?::\s*String\s*)?=\s*"((?:[^"\\]|\\.)*)"', own):
        members[m.group(1)] = m.group(2)
    return members


def vocabulary_value(qualified: str) -> str:
    *path, member = qualified.split(".")
    members = enum_members(read("Vocabulary"), path)
    if member not in members:
        raise AssertionError(f"Vocabulary.swift: {'.'.join(path)} has no {member} (it has {', '.join(sorted(members))})")
    return members[member]


def swift_literal(expr: str) -> str:
    """A string literal, or a reference to a Vocabulary.swift constant (`Annotation.Lineage.prefix`)."""
    expr = expr.strip()
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', expr)
    if m:
        return m.group(1)
    m = re.fullmatch(r"(?:DepotAPI\.)?([A-Z]\w*(?:\.\w+)+?)(?:\.rawValue)?", expr)
    if m:
        return vocabulary_value(m.group(1))
    raise AssertionError(f"cannot read {expr!r} as a string literal or a Vocabulary.swift constant")


def swift_list(text: str, pattern: str, what: str) -> list[str]:
    m = re.search(pattern, text)
    if not m:
        raise AssertionError(f"StageExecution.swift: cannot find {what} (pattern {pattern!r}); if the runner "
                             "changed how it defines it, update hooks/tests/test_vocabulary.py")
    return [swift_literal(e) for e in m.group(1).split(",") if e.strip()]


def stage_execution_value(name: str) -> Union[str, int]:
    text = read("StageExecution")
    kind, _, index = name.partition(".")
    if kind == "reservedPrefixes":
        return swift_list(text, r"static\s+let\s+reservedPrefixes\s*(?::[^=]+)?=\s*\[([^\]]*)\]",
                          "StageExecution.reservedPrefixes")[int(index)]
    if kind == "resultKeys":
        # StageResult.read: `for key in json.keys where !["artifact_type", "relation", "annotations"].contains(key)`
        keys = swift_list(text, r"for\s+key\s+in\s+json\.keys\s+where\s+!\s*\[([^\]]*)\]\s*\.contains",
                          "the DEPOT_RESULT keys StageResult.read accepts")
        key = keys[int(index)]
        if not re.search(r'json\[\s*"' + re.escape(key) + r'"\s*\]', text):
            raise AssertionError(f"StageExecution.swift accepts the DEPOT_RESULT key {key!r} but never reads json[{key!r}]")
        return key
    if kind == "permanentExitStatus":
        m = re.search(r"case\s+\.exited\((\d+)\)\s*:[^\n]*permanent:\s*true", text)
        if not m:
            raise AssertionError("StageExecution.swift: no `case .exited(N): ... permanent: true` (the exit status that "
                                 "fails a job without retries)")
        return int(m.group(1))
    raise AssertionError(f"unknown StageExecution entry {name!r} in SWIFT_VOCABULARY")


def swift_value(where: str) -> Union[str, int]:
    stem, _, name = where.partition(":")
    if stem == "Vocabulary":
        return vocabulary_value(name)
    if stem == "StageExecution":
        return stage_execution_value(name)
    raise AssertionError(f"unknown Swift file {stem!r} in SWIFT_VOCABULARY key {where!r}")


class SwiftParsing(unittest.TestCase):
    """The parser itself, on a snippet with the shapes Vocabulary.swift uses."""

    SNIPPET = '''
    /// Doc with braces { and a "quote".
    public enum Outer: String {
        case plain, other
        case dashed = "da-shed"  // comment }
        public static let key = "a.b.c"
        public static let notMine: [String] = ["x"]
        public enum Inner {
            public static let key = "inner.key"
            case innerCase = "nope"
        }
        public var isX: Bool { self == .plain }
    }
    '''

    def test_cases_and_static_lets(self) -> None:
        m = enum_members(self.SNIPPET, ["Outer"])
        self.assertEqual(m, {"plain": "plain", "other": "other", "dashed": "da-shed", "key": "a.b.c"})

    def test_nested_enum(self) -> None:
        self.assertEqual(enum_members(self.SNIPPET, ["Outer", "Inner"]), {"key": "inner.key", "innerCase": "nope"})

    def test_missing_enum_fails(self) -> None:
        with self.assertRaises(AssertionError):
            enum_members(self.SNIPPET, ["Outer", "Missing"])

    def test_literal_or_reference(self) -> None:
        self.assertEqual(swift_literal('"dev.depot.job."'), "dev.depot.job.")
        self.assertEqual(swift_literal("Annotation.Job.prefix"), vocabulary_value("Annotation.Job.prefix"))
        self.assertEqual(swift_literal("LineageRelation.packagedFrom.rawValue"), "packaged-from")


class SharedVocabulary(unittest.TestCase):
    def test_every_shared_constant_matches_swift(self) -> None:
        self.assertTrue(depot_hook.SWIFT_VOCABULARY)
        for where, value in depot_hook.SWIFT_VOCABULARY.items():
            with self.subTest(where=where):
                self.assertEqual(swift_value(where), value,
                                 f"depot_hook.py says {value!r} for {where}; the Swift side disagrees")

    def test_every_relation_constant_is_listed(self) -> None:
        """Each RELATION_* / *_PREFIX / RESULT_* constant of depot_hook is in SWIFT_VOCABULARY (checked above)."""
        listed = set(depot_hook.SWIFT_VOCABULARY.values())
        for name in dir(depot_hook):
            if name.startswith(("RELATION_", "RESULT_")) and name != "RESULT_KEYS" or name.endswith("_PREFIX") \
                    or name == "PLATFORM_ANNOTATION":
                with self.subTest(constant=name):
                    self.assertIn(getattr(depot_hook, name), listed, f"depot_hook.{name} is not in SWIFT_VOCABULARY")

    def test_result_keys_are_exactly_the_runners(self) -> None:
        text = read("StageExecution")
        keys = swift_list(text, r"for\s+key\s+in\s+json\.keys\s+where\s+!\s*\[([^\]]*)\]\s*\.contains", "result keys")
        self.assertEqual(sorted(keys), sorted(depot_hook.RESULT_KEYS))

    def test_reserved_prefixes_are_the_runners(self) -> None:
        text = read("StageExecution")
        prefixes = swift_list(text, r"static\s+let\s+reservedPrefixes\s*(?::[^=]+)?=\s*\[([^\]]*)\]", "reservedPrefixes")
        self.assertEqual(sorted(prefixes), sorted(depot_hook.RESERVED_PREFIXES))

    def test_runner_accepts_the_relations_the_hooks_write(self) -> None:
        """StageResult.read refuses a relation it does not know. Today it checks against
        DepotClient's LineageAnnotation.relations plus "derived-from"; read whichever set it names."""
        text = read("StageExecution")
        relations = {v for k, v in depot_hook.SWIFT_VOCABULARY.items() if k.startswith("Vocabulary:LineageRelation.")}
        if "LineageAnnotation.relations" in text:
            path = os.path.join(hookenv.ROOT, "Sources", "DepotClient", "ArtifactFiles.swift")
            with open(path) as f:
                m = re.search(r"static\s+let\s+relations\s*:\s*Set<String>\s*=\s*\[([^\]]*)\]",
                              block(f.read(), r"\benum\s+LineageAnnotation\b") or "")
            self.assertIsNotNone(m, "ArtifactFiles.swift: LineageAnnotation.relations not found")
            assert m is not None
            accepted = set(re.findall(r'"([^"]+)"', m.group(1)))
            extra = re.search(r"LineageAnnotation\.relations\.union\(\[([^\]]*)\]\)", text)
            if extra:
                accepted |= set(re.findall(r'"([^"]+)"', extra.group(1)))
        else:
            self.assertIn("LineageRelation", text, "StageExecution.swift: cannot tell which relations it accepts; "
                                                   "update hooks/tests/test_vocabulary.py")
            accepted = set(enum_members(read("Vocabulary"), ["LineageRelation"]).values())
        self.assertLessEqual(relations, accepted)


class StagesUseTheSharedConstants(unittest.TestCase):
    """No stage spells a Swift-defined word itself: it would escape the check above."""

    def literals(self, hook: str) -> set[str]:
        with open(os.path.join(hookenv.BUILTIN, hook + ".py")) as f:
            tree = ast.parse(f.read())
        return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    def test_no_stage_spells_a_shared_word(self) -> None:
        shared = {v for v in depot_hook.SWIFT_VOCABULARY.values() if isinstance(v, str)}
        relations = set(enum_members(read("Vocabulary"), ["LineageRelation"]).values())
        for hook in ("convert", "accelerate", "package"):
            for s in self.literals(hook):
                with self.subTest(hook=hook, literal=s):
                    self.assertNotIn(s, shared | relations, f"{hook}.py spells {s!r}: use depot_hook's constant")
                    self.assertFalse(s.startswith((depot_hook.METRIC_PREFIX, *depot_hook.RESERVED_PREFIXES)),
                                     f"{hook}.py spells {s!r}: build it from depot_hook.METRIC_PREFIX (and never "
                                     "write dev.depot.lineage.* / dev.depot.job.*: the runner does)")


if __name__ == "__main__":
    unittest.main()
